"""Where one customer's rows are, table by table: the single list that export and erase both walk.

:data:`HOLDINGS` names every table that can hold something about a customer and how to find their rows;
:data:`NO_PERSONAL_DATA` names every other table with the reason it holds none. ``tests/privacy`` checks that
every table of :mod:`scrm.models` is in exactly one of them, so a new table cannot be forgotten.

Most tables are found by an indexed column (external_userid, member_id, subject_id, lead_id…). The plumbing
tables (outbox, inbox, dead letters, audit) keep the customer inside JSON or keys; they are searched with a
``LIKE`` on the JSON as text (a scan, once per request) and the candidates are confirmed in Python.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, cast, or_
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.models import (
    AuditLog,
    CampaignTarget,
    Contact,
    ContactTag,
    ContactTouch,
    CustomerTransfer,
    DeadLetter,
    FollowRelation,
    GroupMember,
    InboxEvent,
    IntentSignal,
    Lead,
    LeadEvent,
    LeadScoreChange,
    Message,
    OutboxCommand,
    SopEnrolment,
    SopStepRun,
    StaffNotification,
)


@dataclass
class Subject:
    """One customer of one corp, with the ids other tables reach them through."""

    corp_id: str
    external_userid: str
    lead_ids: list[int] = field(default_factory=list)
    enrolment_ids: list[int] = field(default_factory=list)
    batch_keys: list[str] = field(default_factory=list)  # outbox commands that carried notifications about them

    def named_in(self, *values: Any) -> bool:
        """Whether the external_userid appears in any of ``values`` (strings or JSON)."""
        return any(self.external_userid in json.dumps(v, ensure_ascii=False) for v in values if v)


Finder = Callable[[AsyncSession, Subject], Awaitable[Sequence[SQLModel]]]


@dataclass(frozen=True)
class Holding:
    table: str
    find: Finder


def _like(column: Any, needle: str) -> Any:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return cast(column, String).like(f"%{escaped}%", escape="\\")


async def _rows(session: AsyncSession, stmt: Any) -> list[SQLModel]:
    return list((await session.exec(stmt)).all())


async def _by_column(session: AsyncSession, model: type[SQLModel], subject: Subject, column: str) -> list[SQLModel]:
    attr = getattr(model, column)
    stmt = select(model).where(model.corp_id == subject.corp_id, attr == subject.external_userid)  # type: ignore[attr-defined]
    return await _rows(session, stmt.order_by(model.id))  # type: ignore[attr-defined]


def _column(model: type[SQLModel], column: str) -> Finder:
    async def find(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
        return await _by_column(session, model, subject, column)

    return find


async def _lead_events(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    stmt = select(LeadEvent).where(col(LeadEvent.lead_id).in_(subject.lead_ids)).order_by(col(LeadEvent.id))
    return await _rows(session, stmt) if subject.lead_ids else []


async def _notifications(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    about = [_like(StaffNotification.key, subject.external_userid)]
    if subject.lead_ids:
        about.append(col(StaffNotification.lead_id).in_(subject.lead_ids))
    stmt = select(StaffNotification).where(StaffNotification.corp_id == subject.corp_id, or_(*about))
    return await _rows(session, stmt.order_by(col(StaffNotification.id)))


async def _enrolments(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    stmt = select(SopEnrolment).where(
        SopEnrolment.corp_id == subject.corp_id,
        SopEnrolment.subject_type == "contact",
        SopEnrolment.subject_id == subject.external_userid,
    )
    return await _rows(session, stmt.order_by(col(SopEnrolment.id)))


async def _step_runs(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    if not subject.enrolment_ids:
        return []
    stmt = select(SopStepRun).where(col(SopStepRun.enrolment_id).in_(subject.enrolment_ids))
    return await _rows(session, stmt.order_by(col(SopStepRun.id)))


async def _touches(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    stmt = select(ContactTouch).where(
        ContactTouch.corp_id == subject.corp_id,
        ContactTouch.recipient_type == "contact",
        ContactTouch.recipient_id == subject.external_userid,
    )
    return await _rows(session, stmt.order_by(col(ContactTouch.id)))


async def _campaign_targets(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    stmt = select(CampaignTarget).where(
        CampaignTarget.corp_id == subject.corp_id,
        CampaignTarget.target_type == "contact",
        CampaignTarget.target_id == subject.external_userid,
    )
    return await _rows(session, stmt.order_by(col(CampaignTarget.id)))


async def _outbox(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    about = [
        _like(OutboxCommand.idempotency_key, subject.external_userid),
        _like(OutboxCommand.payload, subject.external_userid),
    ]
    if subject.batch_keys:
        about.append(col(OutboxCommand.idempotency_key).in_(subject.batch_keys))
    stmt = select(OutboxCommand).where(OutboxCommand.corp_id == subject.corp_id, or_(*about))
    rows = (await session.exec(stmt.order_by(col(OutboxCommand.id)))).all()
    keys = set(subject.batch_keys)
    return [r for r in rows if r.idempotency_key in keys or subject.named_in(r.idempotency_key, r.payload)]


async def _inbox(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    eu = subject.external_userid
    stmt = select(InboxEvent).where(
        or_(_like(InboxEvent.payload, eu), _like(InboxEvent.ordering_key, eu), _like(InboxEvent.dedup_key, eu))
    )
    rows = (await session.exec(stmt.order_by(col(InboxEvent.id)))).all()
    return [
        r
        for r in rows
        if r.corp_id in ("", subject.corp_id) and subject.named_in(r.payload, r.ordering_key, r.dedup_key)
    ]


async def _dead_letters(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    eu = subject.external_userid
    stmt = select(DeadLetter).where(
        or_(_like(DeadLetter.payload, eu), _like(DeadLetter.ordering_key, eu), _like(DeadLetter.ref, eu))
    )
    rows = (await session.exec(stmt.order_by(col(DeadLetter.id)))).all()
    return [
        r for r in rows if r.corp_id in ("", subject.corp_id) and subject.named_in(r.payload, r.ordering_key, r.ref)
    ]


async def _audit(session: AsyncSession, subject: Subject) -> Sequence[SQLModel]:
    eu = subject.external_userid
    about = [AuditLog.subject_id == eu, _like(AuditLog.detail, eu)]
    if subject.lead_ids:
        lead_ids = [str(i) for i in subject.lead_ids]
        about.append(and_(col(AuditLog.subject_type) == "lead", col(AuditLog.subject_id).in_(lead_ids)))
    stmt = select(AuditLog).where(AuditLog.corp_id == subject.corp_id, or_(*about))
    rows = (await session.exec(stmt.order_by(col(AuditLog.id)))).all()
    leads = {str(i) for i in subject.lead_ids}
    return [
        r
        for r in rows
        if r.subject_id == eu or (r.subject_type == "lead" and r.subject_id in leads) or subject.named_in(r.detail)
    ]


HOLDINGS: tuple[Holding, ...] = (
    Holding("contacts", _column(Contact, "external_userid")),
    Holding("follow_relations", _column(FollowRelation, "external_userid")),
    Holding("contact_tags", _column(ContactTag, "external_userid")),
    Holding("group_members", _column(GroupMember, "member_id")),
    Holding("messages", _column(Message, "external_userid")),
    Holding("intent_signals", _column(IntentSignal, "external_userid")),
    Holding("lead_score_changes", _column(LeadScoreChange, "external_userid")),
    Holding("leads", _column(Lead, "external_userid")),
    Holding("lead_events", _lead_events),
    Holding("staff_notifications", _notifications),
    Holding("customer_transfers", _column(CustomerTransfer, "external_userid")),
    Holding("sop_enrolments", _enrolments),
    Holding("sop_step_runs", _step_runs),
    Holding("contact_touches", _touches),
    Holding("campaign_targets", _campaign_targets),
    Holding("outbox_commands", _outbox),
    Holding("inbox_events", _inbox),
    Holding("dead_letters", _dead_letters),
    Holding("audit_log", _audit),
)

NO_PERSONAL_DATA: dict[str, str] = {
    "corps": "the tenant itself",
    "dealers": "dealer shops: business data",
    "staff": "staff members (employees), not customers",
    "users": "people who sign in to Lianyi (employees), not customers",
    "api_tokens": "staff bearer tokens: ids, expiry, revocation",
    "user_sessions": "employees' console sessions (a digest of the session id and of the client)",
    "login_failures": "failed console sign-ins of employees (username, address)",
    "tags": "the corp's tag catalogue; which customer has a tag is in contact_tags",
    "tag_groups": "the corp's tag catalogue",
    "customer_groups": "a group's own name, owner and notice; its customers are rows of group_members",
    "campaigns": "what operators wrote and scheduled; recipients are campaign_targets",
    "campaign_runs": "counts per occurrence; recipients are campaign_targets",
    "campaign_batches": "sender, counts and a content fingerprint; recipients are campaign_targets and the outbox",
    "sop_versions": "template text as operators wrote it, not rendered for anyone",
    "sync_checkpoints": "WeCom paging cursors",
    "privacy_keys": "the random salt of tombstone hashes",
    "privacy_tombstones": "salted hashes of erased customers: the tombstone must outlive the erasure",
}


async def resolve(session: AsyncSession, corp_id: str, external_userid: str) -> Subject:
    """The subject with the ids of its leads, enrolments and notification batches."""
    subject = Subject(corp_id, external_userid)
    leads = select(Lead.id).where(Lead.corp_id == corp_id, Lead.external_userid == external_userid)
    subject.lead_ids = [i for i in (await session.exec(leads)).all() if i is not None]
    subject.enrolment_ids = [e.id for e in await _enrolments(session, subject) if isinstance(e, SopEnrolment) and e.id]
    notes = await _notifications(session, subject)
    subject.batch_keys = sorted({n.batch_key for n in notes if isinstance(n, StaffNotification) and n.batch_key})
    return subject


async def find_all(session: AsyncSession, subject: Subject) -> dict[str, list[SQLModel]]:
    """Every holding's rows about the subject, in :data:`HOLDINGS` order."""
    return {h.table: list(await h.find(session, subject)) for h in HOLDINGS}
