"""Customer transfer (在职继承): moving a hot customer from the brand account that added them to the advisor.

Life of a :class:`~scrm.models.CustomerTransfer`::

    requested ──call accepted (or 40129 "in progress")──▶ waiting ──transfer_result──▶ done | refused | limit
        └──────call refused (84061, 40128, 40096, …)────▶ failed

:func:`request_transfer` writes the row and its outbox command (``TRANSFER_CUSTOMER``) in one transaction,
unless the customer already used WeCom's budget of two transfers per 90 days; the caller then asks the
advisor to invite the customer instead. The executor reports the call with :func:`apply_call_result`; the
leader's poll (:func:`due_polls`, then :func:`apply_transfer_status`) follows a waiting transfer until WeCom
settles it; a ``transfer_fail`` callback settles it at once (:func:`apply_transfer_fail`). Every step writes
the lead's history; a transfer that does not happen sets ``Lead.reach = "invite"`` and queues an invite task
for the advisor. Nothing here talks to WeCom.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.commands import CommandKind, enqueue
from scrm.leads.history import record_event
from scrm.leads.notify import notify_staff
from scrm.models import CustomerTransfer, Lead, OutboxCommand, TransferStatus

log = logging.getLogger(__name__)

TRANSFERS_PER_90_DAYS = 2
BUDGET_WINDOW = timedelta(days=90)
POLL_INTERVAL = timedelta(minutes=30)
IN_FLIGHT_WINDOW = timedelta(days=1)
SUCCESS_MESSAGE_MAX = 200  # transfer_success_msg, characters

# transfer_result status → our status
RESULT_DONE, RESULT_WAITING, RESULT_REFUSED, RESULT_LIMIT, RESULT_NO_RECORD = 1, 2, 3, 4, 5
ERR_IN_PROGRESS = 40129
FAIL_REASON_STATUS = {"customer_refused": TransferStatus.REFUSED, "customer_limit_exceed": TransferStatus.LIMIT}

# statuses that mean WeCom accepted the transfer (they count against the 90-day budget)
ACCEPTED = (TransferStatus.WAITING, TransferStatus.DONE, TransferStatus.REFUSED, TransferStatus.LIMIT)
SETTLED = (TransferStatus.DONE, TransferStatus.REFUSED, TransferStatus.LIMIT, TransferStatus.FAILED)

# why a transfer did not happen, as the advisor reads it
ERRCODE_REASONS = {
    84061: "品牌账号与该客户已不是好友关系",
    40128: "该客户90天内已被转接两次，企业微信不允许再次转接",
    40096: "客户ID无效",
}
STATUS_REASONS = {
    TransferStatus.REFUSED: "客户拒绝了转接",
    TransferStatus.LIMIT: "您的客户数已达企业微信上限",
}


def command_key(corp_id: str, lead_id: int | None, external_userid: str, takeover_userid: str) -> str:
    """The transfer's identity: one transfer of one customer to one advisor per lead."""
    return f"transfer:{corp_id}:{lead_id or 0}:{external_userid}:{takeover_userid}"


async def transfers_used(session: AsyncSession, corp_id: str, external_userid: str, *, now: datetime) -> int:
    """How many transfers of this customer WeCom accepted in the 90 days before ``now``."""
    statuses = [s.value for s in ACCEPTED]
    result = await session.exec(
        select(func.count())
        .select_from(CustomerTransfer)
        .where(
            CustomerTransfer.corp_id == corp_id,
            CustomerTransfer.external_userid == external_userid,
            col(CustomerTransfer.status).in_(statuses),
            CustomerTransfer.requested_at > now - BUDGET_WINDOW,
        )
    )
    return int(result.one())


async def _pending(session: AsyncSession, corp_id: str, external_userid: str, now: datetime) -> bool:
    """Whether a transfer of this customer (to anyone) waits for the customer, or was requested and may still be
    accepted (see :func:`_in_flight` for why an old unanswered request no longer counts)."""
    waiting = col(CustomerTransfer.status) == TransferStatus.WAITING.value
    requested = and_(
        col(CustomerTransfer.status) == TransferStatus.REQUESTED.value,
        col(CustomerTransfer.requested_at) > now - IN_FLIGHT_WINDOW,
    )
    statement = select(CustomerTransfer.id).where(
        CustomerTransfer.corp_id == corp_id,
        CustomerTransfer.external_userid == external_userid,
        or_(waiting, requested),
    )
    return (await session.exec(statement.limit(1))).first() is not None


async def _in_flight(session: AsyncSession, corp_id: str, external_userid: str, now: datetime) -> int:
    """Requested transfers whose call has not been answered yet (they may still be accepted). A command is
    retried for well under a day; an older unanswered request is one whose command died, and is not counted."""
    result = await session.exec(
        select(func.count())
        .select_from(CustomerTransfer)
        .where(
            CustomerTransfer.corp_id == corp_id,
            CustomerTransfer.external_userid == external_userid,
            CustomerTransfer.status == TransferStatus.REQUESTED.value,
            CustomerTransfer.requested_at > now - IN_FLIGHT_WINDOW,
        )
    )
    return int(result.one())


async def request_transfer(
    session: AsyncSession,
    *,
    corp_id: str,
    lead_id: int | None,
    external_userid: str,
    handover_userid: str,
    takeover_userid: str,
    message: str,
    now: datetime,
    lead_url: str = "",
) -> CustomerTransfer | None:
    """Ask WeCom (through the outbox) to transfer the customer to ``takeover_userid``.

    None when the customer's 90-day budget is used up (nothing is written; the caller falls back to an
    invite task). Idempotent: asking again for the same lead, customer and advisor returns the first row.
    """
    if not handover_userid or not takeover_userid or handover_userid == takeover_userid:
        raise ValueError(f"转接需要两个不同的成员账号（原跟进人 {handover_userid!r}，接替人 {takeover_userid!r}）")
    if len(message) > SUCCESS_MESSAGE_MAX:
        raise ValueError(f"转接成功提示语最多 {SUCCESS_MESSAGE_MAX} 个字，当前 {len(message)} 个字")
    key = command_key(corp_id, lead_id, external_userid, takeover_userid)
    existing = (await session.exec(select(CustomerTransfer).where(CustomerTransfer.command_key == key))).first()
    if existing is not None:
        return existing
    if await _pending(session, corp_id, external_userid, now):
        # WeCom takes one transfer of a customer at a time (40129); the advisor invites them instead
        log.info("transfer already in progress", extra={"external_userid": external_userid})
        return None
    used = await transfers_used(session, corp_id, external_userid, now=now)
    if used + await _in_flight(session, corp_id, external_userid, now) >= TRANSFERS_PER_90_DAYS:
        log.info("transfer budget used", extra={"external_userid": external_userid, "used": used})
        return None
    transfer = CustomerTransfer(
        corp_id=corp_id,
        external_userid=external_userid,
        handover_userid=handover_userid,
        takeover_userid=takeover_userid,
        lead_id=lead_id,
        command_key=key,
        status=TransferStatus.REQUESTED.value,
        requested_at=now,
    )
    session.add(transfer)
    await session.flush()
    payload: dict[str, Any] = {
        "transfer_id": transfer.id,
        "handover_userid": handover_userid,
        "takeover_userid": takeover_userid,
        "external_userid": external_userid,
        "transfer_success_msg": message,
        "lead_url": lead_url,
    }
    await enqueue(session, corp_id=corp_id, kind=CommandKind.TRANSFER_CUSTOMER, key=key, payload=payload)
    await _record(session, transfer, "transfer_requested", now)
    return transfer


async def apply_call_result(session: AsyncSession, transfer_id: int, *, errcode: int, now: datetime) -> None:
    """The transfer_customer answer for this customer: 0 (or 40129, an earlier call of ours is in progress)
    starts the wait; any other errcode fails the transfer."""
    transfer = await _get(session, transfer_id)
    if transfer.status != TransferStatus.REQUESTED.value:
        return  # a replayed answer
    if errcode in (0, ERR_IN_PROGRESS):
        transfer.status = TransferStatus.WAITING.value
        transfer.errcode = errcode or None
        transfer.next_poll_at = now + POLL_INTERVAL
        session.add(transfer)
        await _record(session, transfer, "transfer_waiting", now, errcode=errcode)
        return
    transfer.errcode = errcode
    await _settle(
        session, transfer, TransferStatus.FAILED, now, reason=ERRCODE_REASONS.get(errcode, f"错误码 {errcode}")
    )


async def apply_transfer_status(
    session: AsyncSession, transfer_id: int, *, status: int, takeover_time: int | None, now: datetime
) -> None:
    """One transfer_result entry: 1 done, 2 still waiting (poll again), 3 refused, 4 takeover at limit,
    5 WeCom has no record (failed)."""
    transfer = await _get(session, transfer_id)
    if transfer.status != TransferStatus.WAITING.value:
        return
    if status == RESULT_WAITING:
        transfer.next_poll_at = now + POLL_INTERVAL
        session.add(transfer)
        return
    if status == RESULT_DONE:
        await _settle(session, transfer, TransferStatus.DONE, now, takeover_time=takeover_time)
    elif status == RESULT_REFUSED:
        await _settle(session, transfer, TransferStatus.REFUSED, now)
    elif status == RESULT_LIMIT:
        await _settle(session, transfer, TransferStatus.LIMIT, now)
    elif status == RESULT_NO_RECORD:
        await _settle(session, transfer, TransferStatus.FAILED, now, reason="企业微信没有这次转接的记录")
    else:
        raise ValueError(f"未知的转接状态 {status}（应为 1–5）")


async def apply_transfer_fail(
    session: AsyncSession, corp_id: str, *, takeover_userid: str, external_userid: str, fail_reason: str, now: datetime
) -> int:
    """The transfer_fail callback: settle the waiting transfer(s) of this customer to ``takeover_userid``.
    Returns how many were settled (0 for a replay or a transfer Lianyi did not request)."""
    status = FAIL_REASON_STATUS.get(fail_reason, TransferStatus.REFUSED)
    rows = await session.exec(
        select(CustomerTransfer).where(
            CustomerTransfer.corp_id == corp_id,
            CustomerTransfer.external_userid == external_userid,
            CustomerTransfer.takeover_userid == takeover_userid,
            CustomerTransfer.status == TransferStatus.WAITING.value,
        )
    )
    settled = 0
    for transfer in rows.all():
        await _settle(session, transfer, status, now)
        settled += 1
    return settled


async def due_polls(session: AsyncSession, corp_id: str, *, now: datetime, limit: int) -> list[CustomerTransfer]:
    """Waiting transfers whose next poll is due, oldest first."""
    rows = await session.exec(
        select(CustomerTransfer)
        .where(
            CustomerTransfer.corp_id == corp_id,
            CustomerTransfer.status == TransferStatus.WAITING.value,
            col(CustomerTransfer.next_poll_at).is_not(None),
            col(CustomerTransfer.next_poll_at) <= now,
        )
        .order_by(col(CustomerTransfer.next_poll_at), col(CustomerTransfer.id))
        .limit(limit)
    )
    return list(rows.all())


# ---- helpers ----------------------------------------------------------------------------------------------


async def _get(session: AsyncSession, transfer_id: int) -> CustomerTransfer:
    transfer = await session.get(CustomerTransfer, transfer_id)
    if transfer is None:
        raise LookupError(f"转接记录 {transfer_id} 不存在")
    return transfer


async def _lead(session: AsyncSession, transfer: CustomerTransfer) -> Lead | None:
    return None if transfer.lead_id is None else await session.get(Lead, transfer.lead_id)


async def _record(
    session: AsyncSession, transfer: CustomerTransfer, kind: str, now: datetime, **extra: Any
) -> Lead | None:
    lead = await _lead(session, transfer)
    if lead is not None:
        detail = {
            "transfer_id": transfer.id,
            "handover_userid": transfer.handover_userid,
            "takeover_userid": transfer.takeover_userid,
            **extra,
        }
        record_event(session, lead, kind, now=now, detail=detail)
    return lead


async def _lead_url(session: AsyncSession, transfer: CustomerTransfer) -> str:
    """The lead page link the request stored in the transfer's command payload."""
    row = await session.exec(select(OutboxCommand).where(OutboxCommand.idempotency_key == transfer.command_key))
    command = row.first()
    return str((command.payload if command is not None else {}).get("lead_url") or "")


async def _settle(
    session: AsyncSession,
    transfer: CustomerTransfer,
    status: TransferStatus,
    now: datetime,
    *,
    reason: str = "",
    takeover_time: int | None = None,
) -> None:
    transfer.status = status.value
    transfer.result_at = now
    transfer.next_poll_at = None
    session.add(transfer)
    kind = {
        TransferStatus.DONE: "transfer_done",
        TransferStatus.REFUSED: "transfer_refused",
        TransferStatus.LIMIT: "transfer_refused",
    }.get(status, "transfer_failed")
    extra: dict[str, Any] = {"status": status.value}
    if transfer.errcode is not None:
        extra["errcode"] = transfer.errcode
    if takeover_time is not None:
        extra["takeover_time"] = takeover_time
    lead = await _record(session, transfer, kind, now, **extra)
    if status is TransferStatus.DONE:
        return
    reason = reason or STATUS_REASONS.get(status, "")
    if lead is not None:
        lead.reach = "invite"
        lead.updated_at = now
        session.add(lead)
    await notify_staff(
        session,
        corp_id=transfer.corp_id,
        userid=transfer.takeover_userid,
        key=f"lead:{transfer.lead_id}:transfer_failed:{transfer.id}",
        kind="invite_task",
        title="客户转接未成功，请主动邀请",
        description=f"原因：{reason}。请通过电话或企业微信名片主动添加该客户为好友。",
        url=await _lead_url(session, transfer),
        lead_id=transfer.lead_id,
        now=now,
    )
