"""Telling staff about leads without losing a word to WeCom's per-member limit.

Services call :func:`notify_staff`, which only records a :class:`~scrm.models.StaffNotification` (idempotent by
``key``: the news, not the attempt). The leader's flush tick (:func:`flush_notifications`, every couple of
seconds) turns each member's pending notifications into at most one app message per tick: a textcard when there
is one, a digest card when several are waiting. Before sending, it counts the member's messages of the last
minute and hour from the same ledger and leaves them pending while the member is at ``notify.per_minute`` /
``per_hour`` (below WeCom's 30/min and 1000/h, where the excess is silently dropped). The outbox executor keeps
a second, delivery-time guard for messages that reach the dispatcher late.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Table, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, write_transaction
from scrm.db_insert import insert_ignoring_conflict
from scrm.leads.rules import NotifyLimits
from scrm.models import Lead, NotificationStatus, StaffNotification

log = logging.getLogger(__name__)

TITLE_MAX = 128  # bytes, textcard.title
DESCRIPTION_MAX = 512  # bytes, textcard.description
MAX_MEMBERS_PER_FLUSH = 500
_table: Table = StaffNotification.__table__  # type: ignore[attr-defined]


def truncate_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (with an ellipsis when cut), never mid-character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


async def notify_staff(
    session: AsyncSession,
    *,
    corp_id: str,
    userid: str,
    key: str,
    kind: str,
    title: str,
    description: str,
    url: str = "",
    lead_id: int | None = None,
    now: datetime,
) -> bool:
    """Queue one notification for ``userid`` in the caller's transaction; False when ``key`` was queued before."""
    values = {
        "corp_id": corp_id,
        "userid": userid,
        "key": key,
        "kind": kind,
        "lead_id": lead_id,
        "title": truncate_bytes(title, TITLE_MAX),
        "description": truncate_bytes(description, 1024),
        "url": url,
        "status": NotificationStatus.PENDING.value,
        "batch_key": "",
        "created_at": now,
    }
    return await insert_ignoring_conflict(session, _table, values, ("key",))


async def notify_about_lead(
    session: AsyncSession,
    lead: Lead,
    userids: Iterable[str],
    *,
    key: str,
    kind: str,
    card: tuple[str, str],
    url: str,
    now: datetime,
) -> None:
    """Queue ``card`` (title, description) about ``lead`` for each of ``userids`` once, keyed ``<key>:<userid>``."""
    for userid in dict.fromkeys(u for u in userids if u):
        await notify_staff(
            session,
            corp_id=lead.corp_id,
            userid=userid,
            key=f"{key}:{userid}",
            kind=kind,
            title=card[0],
            description=card[1],
            url=url,
            lead_id=lead.id,
            now=now,
        )


async def _sent_since(session: AsyncSession, corp_id: str, userid: str, since: datetime) -> int:
    """Messages (batches) the member received since ``since``, from the notification ledger."""
    statement = select(func.count(func.distinct(StaffNotification.batch_key))).where(
        StaffNotification.corp_id == corp_id,
        StaffNotification.userid == userid,
        col(StaffNotification.sent_at) > since,  # a message exactly a window old has left it
    )
    return int((await session.exec(statement)).one())


def _card(notes: list[StaffNotification], digest_url: str) -> dict[str, str]:
    if len(notes) == 1:
        note = notes[0]
        return {
            "title": note.title,
            "description": truncate_bytes(note.description, DESCRIPTION_MAX),
            "url": note.url or digest_url,
            "btntxt": "查看",
        }
    lines = [f"· {n.title}" for n in notes]
    description = truncate_bytes("\n".join(lines), DESCRIPTION_MAX)
    return {
        "title": truncate_bytes(f"您有 {len(notes)} 条线索消息待处理", TITLE_MAX),
        "description": description,
        "url": digest_url,
        "btntxt": "查看全部",
    }


async def flush_notifications(
    session_factory: SessionFactory, corp_id: str, limits: NotifyLimits, *, now: datetime, digest_url: str
) -> int:
    """Send what fits each member's budget now: one card or one digest per member. Returns messages queued."""
    sent = 0
    async with write_transaction(session_factory) as session:
        statement = (
            select(StaffNotification)
            .where(StaffNotification.corp_id == corp_id, StaffNotification.status == NotificationStatus.PENDING.value)
            .order_by(col(StaffNotification.userid), col(StaffNotification.id))
            .limit(MAX_MEMBERS_PER_FLUSH * 10)
            .with_for_update(skip_locked=True)
        )
        by_member: dict[str, list[StaffNotification]] = defaultdict(list)
        for note in (await session.exec(statement)).all():
            by_member[note.userid].append(note)
        for userid, notes in list(by_member.items())[:MAX_MEMBERS_PER_FLUSH]:
            if await _sent_since(session, corp_id, userid, now - timedelta(minutes=1)) >= limits.per_minute:
                continue
            if await _sent_since(session, corp_id, userid, now - timedelta(hours=1)) >= limits.per_hour:
                continue
            batch = notes if len(notes) >= limits.digest_after else notes[:1]
            batch_key = f"notify:{corp_id}:{userid}:{batch[0].id}"
            payload = {"touser": userid, "msgtype": "textcard", "textcard": _card(batch, digest_url)}
            await enqueue(session, corp_id=corp_id, kind=CommandKind.SEND_APP_MESSAGE, key=batch_key, payload=payload)
            for note in batch:
                note.status = NotificationStatus.SENT.value
                note.batch_key = batch_key
                note.sent_at = now
            sent += 1
    if sent:
        log.info("staff notifications sent", extra={"messages": sent})
    return sent
