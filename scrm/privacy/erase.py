"""``lianyi privacy erase``: remove or irreversibly anonymise one customer's personal data everywhere.

Rows stay where reports count them (contacts by stage, adds by channel, messages and signals per day, leads
and their history, touches against the contact policy, campaign results), with the external_userid replaced
by a pseudonym that is random per erasure, and every personal field blanked: name, avatar, unionid, corp
name, city, remarks, descriptions, phone numbers, channel state and referrer, group nicknames, message text
and payloads, signal details, the questions and notes of leads, notification texts. The plumbing keeps no
trace either: pending commands addressed to the customer are cancelled (``failed``, with the reason), the
others lose the customer from their recipient lists; inbox rows about them are marked done and scrubbed;
their dead letters and unsent notifications are deleted; audit rows about them are scrubbed. An open lead is
closed as lost (reason ``erased``), a transfer is no longer polled, active SOP enrolments end.

A tombstone (:mod:`scrm.privacy.tombstones`) is written in the same transaction, and the audit row holds the
salted hash and the counts only. A second run finds nothing and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.models import (
    AuditLog,
    CampaignTarget,
    CommandStatus,
    Contact,
    ContactTag,
    ContactTouch,
    CustomerTransfer,
    EnrolmentStatus,
    FollowRelation,
    GroupMember,
    InboxEvent,
    InboxStatus,
    IntentSignal,
    Lead,
    LeadEvent,
    LeadScoreChange,
    LeadStatus,
    Message,
    NotificationStatus,
    OutboxCommand,
    SopEnrolment,
    SopStepRun,
    StaffNotification,
)
from scrm.privacy.holdings import find_all, resolve
from scrm.privacy.redact import Redactor
from scrm.privacy.tombstones import erased_at, new_pseudonym, record_tombstone

CANCELLED_BY_ERASURE = "cancelled: the customer's personal data was erased"
END_REASON = "erased"


@dataclass(frozen=True)
class Erasure:
    """What one erase request did: rows changed per table; ``previously_erased_at`` when nothing was left."""

    subject_hash: str
    counts: dict[str, int]
    previously_erased_at: datetime | None

    @property
    def changed(self) -> bool:
        return bool(self.counts)


def _learn(redactor: Redactor, found: dict[str, list[SQLModel]]) -> None:
    """Collect every string that identifies or quotes the customer, before anything is changed."""
    for row in found["contacts"]:
        assert isinstance(row, Contact)
        redactor.learn([row.name, row.avatar, row.unionid, row.corp_name])
    for row in found["follow_relations"]:
        assert isinstance(row, FollowRelation)
        redactor.learn([row.remark, row.description, row.state, row.referrer, *(row.remark_mobiles or [])])
    for row in found["group_members"]:
        assert isinstance(row, GroupMember)
        redactor.learn([row.name, row.group_nickname, row.unionid, row.state])
    for row in found["messages"]:
        assert isinstance(row, Message)
        redactor.learn([row.text])
    for row in found["campaign_targets"]:
        assert isinstance(row, CampaignTarget)
        redactor.learn([row.name])
    for row in found["leads"]:
        assert isinstance(row, Lead)
        redactor.learn([row.asked, row.lost_note])


def _set(row: SQLModel, **values: Any) -> None:
    for name, value in values.items():
        setattr(row, name, value)


Scrub = Callable[[Any, Redactor, datetime], None]


def _contact(row: Contact, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, name="", avatar="", unionid="", corp_name="", city="", gender=0)
    row.updated_at = now


def _relation(row: FollowRelation, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, remark="", description="", remark_mobiles=None, state="", referrer="")
    _set(row, extra=None, updated_at=now)


def _member(row: GroupMember, r: Redactor, now: datetime) -> None:
    _set(row, member_id=r.pseudonym, name="", group_nickname="", unionid="", state="", updated_at=now)


def _message(row: Message, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, text="", payload=None)


def _signal(row: IntentSignal, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, ref=r.text(row.ref), detail=None)


def _score(row: LeadScoreChange, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, reasons=r.json(row.reasons))


def _lead(row: Lead, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, asked="", lost_note="", reasons=r.json(row.reasons), updated_at=now)
    if row.closed_at is None:  # nobody may work a lead on a customer who asked to be forgotten: closed as lost
        _set(row, status_before_lost=row.status, status=LeadStatus.LOST.value, lost_reason=END_REASON, closed_at=now)
        _set(row, sla_phase="", sla_deadline_at=None, next_check_at=None)


def _lead_event(row: LeadEvent, r: Redactor, now: datetime) -> None:
    row.detail = r.json(row.detail)


def _notification(row: StaffNotification, r: Redactor, now: datetime) -> None:
    _set(row, key=r.text(row.key), title=r.text(row.title), description="", url=r.text(row.url))


def _unsent_notification(row: SQLModel) -> bool:
    """A notification about the customer not yet handed to the outbox: never sent, so nothing to count."""
    return isinstance(row, StaffNotification) and row.status == NotificationStatus.PENDING.value


def _enrolment(row: SopEnrolment, r: Redactor, now: datetime) -> None:
    _set(row, subject_id=r.pseudonym, context=r.json(row.context), updated_at=now)
    if row.status == EnrolmentStatus.ACTIVE.value:  # no SOP step may run for a customer who asked to be forgotten
        _set(row, status=EnrolmentStatus.CANCELLED.value, end_reason=END_REASON, ended_at=now, next_due_at=None)


def _step_run(row: SopStepRun, r: Redactor, now: datetime) -> None:
    _set(row, step_key=r.text(row.step_key), commands=r.json(row.commands))


def _touch(row: ContactTouch, r: Redactor, now: datetime) -> None:
    _set(row, recipient_id=r.pseudonym, ref=r.text(row.ref))


def _target(row: CampaignTarget, r: Redactor, now: datetime) -> None:
    _set(row, target_id=r.pseudonym, name="", updated_at=now)


def _transfer(row: CustomerTransfer, r: Redactor, now: datetime) -> None:
    _set(row, external_userid=r.pseudonym, command_key=r.text(row.command_key), next_poll_at=None)


def _addressed(row: OutboxCommand, r: Redactor) -> bool:
    recipient = row.payload.get("external_userid")
    return recipient in (r.external_userid, [r.external_userid]) or r.external_userid in row.idempotency_key


def _command(row: OutboxCommand, r: Redactor, now: datetime) -> None:
    if row.status == CommandStatus.PENDING.value and _addressed(row, r):
        _set(row, status=CommandStatus.FAILED.value, last_error=CANCELLED_BY_ERASURE, finished_at=now)
    still_open = row.status in (CommandStatus.PENDING.value, CommandStatus.RUNNING.value)
    # a command still to be sent to others keeps its content; the customer leaves its recipient lists
    payload = r.json(row.payload, blank_text_keys=not still_open, drop_from_lists=still_open)
    _set(row, payload=payload, idempotency_key=r.text(row.idempotency_key), updated_at=now)
    _set(row, result=r.json(row.result), last_error=r.text(row.last_error) if row.last_error else row.last_error)


def _inbox(row: InboxEvent, r: Redactor, now: datetime) -> None:
    if row.status == InboxStatus.PENDING.value:
        _set(row, status=InboxStatus.DONE.value, processed_at=now, last_error=CANCELLED_BY_ERASURE)
    _set(row, payload=r.json(row.payload), dedup_key=r.text(row.dedup_key), ordering_key=r.text(row.ordering_key))


def _audit(row: AuditLog, r: Redactor, now: datetime) -> None:
    _set(row, subject_id=r.text(row.subject_id), detail=r.json(row.detail))


def _tag(row: ContactTag, r: Redactor, now: datetime) -> None:
    row.external_userid = r.pseudonym


SCRUBBERS: dict[str, Scrub] = {
    "contacts": _contact,
    "follow_relations": _relation,
    "contact_tags": _tag,
    "group_members": _member,
    "messages": _message,
    "intent_signals": _signal,
    "lead_score_changes": _score,
    "leads": _lead,
    "lead_events": _lead_event,
    "staff_notifications": _notification,
    "customer_transfers": _transfer,
    "sop_enrolments": _enrolment,
    "sop_step_runs": _step_run,
    "contact_touches": _touch,
    "campaign_targets": _target,
    "outbox_commands": _command,
    "inbox_events": _inbox,
    "audit_log": _audit,
}
DELETED = frozenset({"dead_letters"})  # replayable copies of events and commands: nothing to count, so removed


async def erase_customer(
    session: AsyncSession, corp_id: str, external_userid: str, *, actor: str, now: datetime
) -> Erasure:
    """Erase the customer in the caller's transaction (see the module docstring)."""
    previous = await erased_at(session, corp_id, external_userid)
    subject = await resolve(session, corp_id, external_userid)
    found = await find_all(session, subject)
    counts = {table: len(rows) for table, rows in found.items() if rows}
    if not counts and previous is not None:
        hashed = await record_tombstone(session, corp_id, external_userid, previous)
        return Erasure(hashed, {}, previous)
    redactor = Redactor(external_userid, new_pseudonym())
    _learn(redactor, found)
    for table, rows in found.items():
        for row in rows:
            if table in DELETED or _unsent_notification(row):
                await session.delete(row)
            else:
                SCRUBBERS[table](row, redactor, now)
    await session.flush()
    hashed = await record_tombstone(session, corp_id, external_userid, now)
    detail = {"subject_hash": hashed, "counts": counts, "repeat": previous is not None}
    await audit.record(session, corp_id, "privacy.erased", "customer_hash", hashed, detail, actor=actor)
    return Erasure(hashed, counts, None)
