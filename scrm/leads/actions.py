"""What staff do to a lead (the lifecycle in :mod:`scrm.leads.transitions`), applied in the caller's transaction.

:func:`perform` locks the lead row (FOR UPDATE on PostgreSQL, so an action and the SLA tick never both act on a
stale lead), checks the actor's right and the lead's status, and applies the action: status and timestamps,
the SLA (accepting starts the contact phase; contact and every later status stop it), history with the actor,
notifications (a lost request goes to the dealer's managers; their decision goes back to the advisor) and the
contact's stage (delivered → 车主; an approved lost → 战败, which starts the 战败召回 SOP); the last three are
:mod:`scrm.leads.action_effects`.

A repeated request is harmless: repeating the action that produced the current status, by the same actor, is
a success that changes nothing (``ActionOutcome.changed`` is False). Every refusal is a
:class:`LeadActionError` with a Chinese message and the HTTP status that fits it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.errors import DomainError, LianyiError
from scrm.leads.action_effects import change_contact_stage, customer_name, notify, start_sla
from scrm.leads.assignment import reassign
from scrm.leads.history import set_status
from scrm.leads.routing import dealer_managers
from scrm.leads.rules import LOST_REASONS
from scrm.leads.services import LeadServices
from scrm.leads.sla import clear_phase
from scrm.leads.transitions import (
    CONTACTED_OR_LATER,
    TRANSITIONS,
    Action,
    Actor,
    Transition,
    refusal_zh,
    status_name,
)
from scrm.models import Lead, LeadEvent, LeadStatus, Message, SlaPhase, Staff, StaffRole, Stage

log = logging.getLogger(__name__)

NOTE_MAX = 512
CONTACTED_BY_MESSAGE = "contacted_by_message"
# the history kind each action writes (also how a repeat is recognised)
EVENT_KINDS: dict[Action, str] = {
    Action.ACCEPT: "accepted",
    Action.CONTACTED: "contacted",
    Action.BOOK_TEST_DRIVE: "test_drive_booked",
    Action.TEST_DRIVE_DONE: "test_drive_done",
    Action.TEST_DRIVE_NO_SHOW: "test_drive_no_show",
    Action.ORDERED: "ordered",
    Action.DELIVERED: "delivered",
    Action.REQUEST_LOST: "lost_requested",
    Action.APPROVE_LOST: "lost_approved",
    Action.REJECT_LOST: "lost_rejected",
}


class LeadActionError(LianyiError):
    """An action refused: ``code`` for programs, ``message_zh`` for staff, ``http_status`` for the API."""

    def __init__(self, code: str, message_zh: str, http_status: int) -> None:
        super().__init__(message_zh)
        self.code, self.message_zh, self.http_status = code, message_zh, http_status


@dataclass(frozen=True)
class ActionOutcome:
    lead: Lead
    changed: bool  # False for a harmless repeat


@dataclass(frozen=True)
class ActionInput:
    """What some actions need besides the lead: the lost reason and note, a manager's note, the new advisor."""

    reason: str = ""
    note: str = ""
    advisor_userid: str | None = None


def lost_reasons_zh() -> str:
    return "、".join(f"{name}（{code}）" for code, name in LOST_REASONS.items())


async def lock_lead(session: AsyncSession, corp_id: str, lead_id: int) -> Lead:
    """The lead, locked for this transaction and read afresh; 404 when the corp has no such lead."""
    statement = (
        select(Lead)
        .where(Lead.id == lead_id, Lead.corp_id == corp_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    lead = (await session.exec(statement)).first()
    if lead is None:
        raise LeadActionError("not_found", f"线索 {lead_id} 不存在", 404)
    return lead


async def staff_member(session: AsyncSession, corp_id: str, userid: str) -> Staff:
    """The active staff member ``userid``; 403 for anyone else."""
    statement = select(Staff).where(Staff.corp_id == corp_id, Staff.userid == userid)
    staff = (await session.exec(statement)).first()
    if staff is None or not staff.active:
        raise LeadActionError("forbidden", f"成员 {userid} 不存在或已停用，无权操作线索", 403)
    return staff


def check_permission(transition: Transition, lead: Lead, staff: Staff) -> None:
    if transition.actor == Actor.ADVISOR:
        if staff.userid != lead.advisor_userid:
            raise LeadActionError("forbidden", "这条线索不是您负责的，不能操作", 403)
        return
    if transition.action == Action.REASSIGN and staff.role == StaffRole.OPERATOR.value:
        return
    if staff.role != StaffRole.MANAGER.value or staff.dealer_id is None or staff.dealer_id != lead.dealer_id:
        raise LeadActionError("forbidden", "只有该线索所属门店的经理才能执行此操作", 403)


async def _last_status_event(session: AsyncSession, lead: Lead) -> LeadEvent | None:
    statement = (
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead.id, LeadEvent.to_status != "")
        .order_by(col(LeadEvent.at).desc(), col(LeadEvent.id).desc())
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def _is_repeat(session: AsyncSession, lead: Lead, action: Action, actor: str) -> bool:
    """Whether ``actor`` already did ``action`` and nothing has changed the lead's status since."""
    kinds = {EVENT_KINDS[action]}
    if action == Action.CONTACTED:
        kinds.add(CONTACTED_BY_MESSAGE)
    last = await _last_status_event(session, lead)
    return last is not None and last.kind in kinds and last.actor == actor and last.to_status == lead.status


def _mark_contacted(lead: Lead, at: datetime) -> None:
    if lead.accepted_at is None:
        lead.accepted_at = at
    if lead.contacted_at is None:
        lead.contacted_at = at


def _validate_note(note: str, label: str) -> str:
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise LeadActionError("bad_note", f"{label}最多 {NOTE_MAX} 个字（现在 {len(note)} 个）", 400)
    return note


async def _request_lost(
    session: AsyncSession, services: LeadServices, lead: Lead, given: ActionInput, actor: str, now: datetime
) -> None:
    if given.reason not in LOST_REASONS:
        shown = f"“{given.reason}”" if given.reason else "（未填写）"
        raise LeadActionError("bad_reason", f"战败原因 {shown} 无效，可选：{lost_reasons_zh()}", 400)
    note = _validate_note(given.note, "战败说明")
    lead.status_before_lost = lead.status
    lead.lost_reason, lead.lost_note = given.reason, note
    clear_phase(lead)
    detail = {"reason": given.reason, "note": note, "before": lead.status}
    event = set_status(
        session, lead, LeadStatus.LOST_PENDING.value, "lost_requested", now=now, actor=actor, detail=detail
    )
    managers = await dealer_managers(session, lead.corp_id, lead.dealer_id) or list(
        services.rules().routing.pool_notify
    )
    if not managers:
        log.warning("lost request without anyone to approve it", extra={"lead": lead.id})
    name = await customer_name(session, lead)
    description = f"顾问 {actor} 申请将 {name} 标记为战败\n原因：{LOST_REASONS[given.reason]}" + (
        f"\n说明：{note}" if note else ""
    )
    await notify(
        session,
        services,
        lead,
        managers,
        kind="lost_request",
        key=f"lead:{lead.id}:lost_request:{event.at.isoformat()}",
        title=f"战败审批：{name}",
        description=description + "\n请批准或驳回。",
        now=now,
    )


async def _approve_lost(session: AsyncSession, services: LeadServices, lead: Lead, actor: str, now: datetime) -> None:
    clear_phase(lead)
    lead.closed_at = now
    reason = LOST_REASONS.get(lead.lost_reason, lead.lost_reason)
    set_status(
        session, lead, LeadStatus.LOST.value, "lost_approved", now=now, actor=actor, detail={"reason": lead.lost_reason}
    )
    await change_contact_stage(session, services, lead, Stage.LOST, now=now, actor=actor)
    name = await customer_name(session, lead)
    await notify(
        session,
        services,
        lead,
        [lead.advisor_userid] if lead.advisor_userid else [],
        kind="lost_decision",
        key=f"lead:{lead.id}:lost_approved",
        title=f"战败申请已通过：{name}",
        description=f"经理 {actor} 已批准战败（{reason}），线索已关闭。",
        now=now,
    )


async def _reject_lost(
    session: AsyncSession, services: LeadServices, lead: Lead, given: ActionInput, actor: str, now: datetime
) -> None:
    note = _validate_note(given.note, "驳回说明")
    back = lead.status_before_lost or LeadStatus.ACCEPTED.value
    detail = {"note": note, "reason": lead.lost_reason}
    lead.status_before_lost, lead.lost_reason, lead.lost_note = "", "", ""
    event = set_status(session, lead, back, "lost_rejected", now=now, actor=actor, detail=detail)
    if back == LeadStatus.ASSIGNED.value:
        await start_sla(session, services, lead, SlaPhase.ACCEPT, now)
    elif back == LeadStatus.ACCEPTED.value:
        await start_sla(session, services, lead, SlaPhase.CONTACT, now)
    name = await customer_name(session, lead)
    await notify(
        session,
        services,
        lead,
        [lead.advisor_userid] if lead.advisor_userid else [],
        kind="lost_decision",
        key=f"lead:{lead.id}:lost_rejected:{event.at.isoformat()}",
        title=f"战败申请被驳回：{name}",
        description=f"经理 {actor} 驳回了战败申请，线索回到「{status_name(back)}」，请继续跟进。"
        + (f"\n经理留言：{note}" if note else ""),
        now=now,
    )


async def _reassign(
    session: AsyncSession, services: LeadServices, lead: Lead, staff: Staff, given: ActionInput, now: datetime
) -> bool:
    target = (given.advisor_userid or "").strip()
    if target:
        advisor = (
            await session.exec(select(Staff).where(Staff.corp_id == lead.corp_id, Staff.userid == target))
        ).first()
        if advisor is None or not advisor.active:
            raise LeadActionError("bad_advisor", f"成员 {target} 不存在或已停用", 400)
        if staff.role == StaffRole.MANAGER.value and advisor.dealer_id != staff.dealer_id:
            raise LeadActionError("bad_advisor", f"成员 {target} 不属于您的门店，不能接这条线索", 400)
        if target == lead.advisor_userid and lead.status not in (LeadStatus.POOL.value, LeadStatus.WAITING.value):
            return False  # already theirs: a repeat
    elif lead.dealer_id is None:
        raise LeadActionError("advisor_required", "这条线索没有所属门店，请指定接手的顾问", 400)
    try:
        await reassign(
            session, services, lead, now=now, actor=staff.userid, advisor_userid=target or None, reason="人工重新分配"
        )
    except DomainError as exc:
        raise LeadActionError("bad_advisor", str(exc), 400) from exc
    return True


async def _apply(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    action: Action,
    given: ActionInput,
    actor: str,
    now: datetime,
) -> None:
    if action == Action.REQUEST_LOST:
        await _request_lost(session, services, lead, given, actor, now)
        return
    if action == Action.APPROVE_LOST:
        await _approve_lost(session, services, lead, actor, now)
        return
    if action == Action.REJECT_LOST:
        await _reject_lost(session, services, lead, given, actor, now)
        return
    target = TRANSITIONS[action].target
    if action == Action.ACCEPT:
        lead.accepted_at = now
        await start_sla(session, services, lead, SlaPhase.CONTACT, now)
    elif target in CONTACTED_OR_LATER:
        _mark_contacted(lead, now)
        clear_phase(lead)
    if action == Action.TEST_DRIVE_DONE:
        lead.test_drive_at = now
    elif action == Action.ORDERED:
        lead.ordered_at = now
    elif action == Action.DELIVERED:
        lead.closed_at = now
    set_status(session, lead, target, EVENT_KINDS[action], now=now, actor=actor)
    if action == Action.DELIVERED:
        await change_contact_stage(session, services, lead, Stage.OWNER, now=now, actor=actor)


async def perform(
    session: AsyncSession,
    services: LeadServices,
    corp_id: str,
    lead_id: int,
    action: Action,
    *,
    actor: str,
    now: datetime,
    given: ActionInput | None = None,
) -> ActionOutcome:
    """Take ``action`` on lead ``lead_id`` as staff member ``actor`` (see the module docstring)."""
    given = given or ActionInput()
    lead = await lock_lead(session, corp_id, lead_id)
    staff = await staff_member(session, corp_id, actor)
    transition = TRANSITIONS[action]
    check_permission(transition, lead, staff)
    if action == Action.REASSIGN:
        if not transition.allows(lead.status):
            raise LeadActionError("wrong_state", refusal_zh(transition, lead.status), 409)
        changed = await _reassign(session, services, lead, staff, given, now)
        return ActionOutcome(lead, changed)
    if await _is_repeat(session, lead, action, actor):
        return ActionOutcome(lead, False)
    if not transition.allows(lead.status):
        raise LeadActionError("wrong_state", refusal_zh(transition, lead.status), 409)
    await _apply(session, services, lead, action, given, actor, now)
    return ActionOutcome(lead, True)


async def on_staff_message(session: AsyncSession, corp_id: str, message: Message, *, now: datetime) -> bool:
    """A message the lead's advisor sent the customer in a single chat marks the open lead contacted (the first
    contact the SLA waits for). True when a lead changed."""
    if message.sender_type != "staff" or message.chat_type != "single":
        return False
    if not message.userid or not message.external_userid:
        return False
    statement = select(Lead.id).where(
        Lead.corp_id == corp_id,
        Lead.external_userid == message.external_userid,
        Lead.advisor_userid == message.userid,
        col(Lead.status).in_([LeadStatus.ASSIGNED.value, LeadStatus.ACCEPTED.value]),
        col(Lead.closed_at).is_(None),
    )
    lead_id = (await session.exec(statement)).first()
    if lead_id is None:
        return False
    lead = await lock_lead(session, corp_id, lead_id)
    if (
        lead.status not in (LeadStatus.ASSIGNED.value, LeadStatus.ACCEPTED.value)
        or lead.advisor_userid != message.userid
    ):
        return False
    if lead.assigned_at is not None and message.sent_at < lead.assigned_at:
        return False  # an older message (a late archive record) is not a response to this lead
    _mark_contacted(lead, message.sent_at)
    clear_phase(lead)
    detail = {"msgid": message.msgid, "source": message.source}
    set_status(
        session, lead, LeadStatus.CONTACTED.value, CONTACTED_BY_MESSAGE, now=now, actor=message.userid, detail=detail
    )
    return True
