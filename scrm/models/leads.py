"""Lead handoff tables: leads and their history, staff notifications (rate-limited, digested) and customer
transfers (在职继承, at most twice per customer per 90 days)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class LeadStatus(StrEnum):
    POOL = "pool"  # 公海: no dealer or no advisor could take it; operators and managers assign it
    WAITING = "waiting"  # routed to a dealer that is closed: assigned at opening time
    ASSIGNED = "assigned"  # an advisor has it and must accept it
    ACCEPTED = "accepted"
    CONTACTED = "contacted"
    TEST_DRIVE_BOOKED = "test_drive_booked"
    TEST_DRIVE_DONE = "test_drive_done"
    TEST_DRIVE_NO_SHOW = "test_drive_no_show"
    ORDERED = "ordered"
    DELIVERED = "delivered"  # closed: the customer is a 车主
    LOST_PENDING = "lost_pending"  # the advisor asked to close it as 战败; the dealer manager decides
    LOST = "lost"  # closed


CLOSED_STATUSES: frozenset[str] = frozenset({LeadStatus.DELIVERED.value, LeadStatus.LOST.value})
# the statuses that hold one of an advisor's capacity slots
WORKING_STATUSES: frozenset[str] = frozenset(
    s.value for s in LeadStatus if s.value not in CLOSED_STATUSES and s not in (LeadStatus.POOL, LeadStatus.WAITING)
)


class SlaPhase(StrEnum):
    NONE = ""
    ACCEPT = "accept"  # from assignment until the advisor accepts
    CONTACT = "contact"  # from acceptance until the first contact with the customer


class Lead(SQLModel, table=True):
    """A hot contact handed to a dealer and an advisor. At most one open lead per contact (partial unique
    index on open leads); ``next_check_at`` is when the SLA tick must look at it next (indexed while set)."""

    __tablename__ = "leads"
    __table_args__ = (
        Index(
            "uq_leads_open_contact",
            "corp_id",
            "external_userid",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
        Index(
            "ix_leads_next_check",
            "next_check_at",
            postgresql_where=text("next_check_at IS NOT NULL"),
            sqlite_where=text("next_check_at IS NOT NULL"),
        ),
        Index("ix_leads_advisor_status", "corp_id", "advisor_userid", "status"),
        Index("ix_leads_dealer_status", "corp_id", "dealer_id", "status"),
        Index("ix_leads_contact", "corp_id", "external_userid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    external_userid: str = Field(max_length=128)
    status: str = Field(default=LeadStatus.POOL.value, max_length=24)
    trigger: str = Field(default="", max_length=32)  # level_H | test_drive_booking | form | manual
    channel: str = Field(default="", max_length=32)
    dealer_id: int | None = Field(default=None, foreign_key="dealers.id")
    route_rule: str = Field(default="", max_length=16)  # state | group | city | pool | manual
    advisor_userid: str = Field(default="", max_length=64)
    assignment_no: int = Field(default=0)  # 1 for the first advisor, +1 per reassignment
    reassign_count: int = Field(default=0)  # reassignments by the SLA ladder
    tried_advisors: list[str] | None = json_field()  # advisors this lead has already been with
    score: int = Field(default=0)
    level: str = Field(default="", max_length=1)
    reasons: list[dict[str, Any]] | None = json_field()  # the top reasons for the score at handoff
    asked: str = Field(default="", max_length=512)  # what the customer asked (latest messages)
    # SLA: the running phase, its deadline and how many ladder rungs have fired
    sla_phase: str = Field(default=SlaPhase.NONE.value, max_length=16)
    sla_started_at: datetime | None = ts_field()
    sla_deadline_at: datetime | None = ts_field()
    sla_step: int = Field(default=0)
    next_check_at: datetime | None = ts_field()
    # how the advisor gets the customer when they are not yet the advisor's contact
    reach: str = Field(default="", max_length=16)  # "" (already theirs) | transfer | invite
    lost_reason: str = Field(default="", max_length=32)
    lost_note: str = Field(default="", max_length=512)
    status_before_lost: str = Field(default="", max_length=24)
    created_at: datetime = ts_field(default_now=True)
    assigned_at: datetime | None = ts_field()
    accepted_at: datetime | None = ts_field()
    contacted_at: datetime | None = ts_field()
    test_drive_at: datetime | None = ts_field()
    ordered_at: datetime | None = ts_field()
    closed_at: datetime | None = ts_field()
    updated_at: datetime = ts_field(default_now=True)


class LeadEvent(SQLModel, table=True):
    """The lead's full history: every status change, assignment, reminder, escalation and transfer."""

    __tablename__ = "lead_events"
    __table_args__ = (Index("ix_lead_events_lead", "lead_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    lead_id: int = Field(foreign_key="leads.id")
    kind: str = Field(max_length=32)
    from_status: str = Field(default="", max_length=24)
    to_status: str = Field(default="", max_length=24)
    actor: str = Field(default="system", max_length=64)  # a staff userid or "system"
    advisor_userid: str = Field(default="", max_length=64)
    detail: dict[str, Any] | None = json_field()
    at: datetime = ts_field(default_now=True)


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"  # handed to the outbox in ``batch_key``'s command (alone or in a digest)


class StaffNotification(SQLModel, table=True):
    """One thing a staff member must be told. The flush tick turns a member's pending notifications into one
    app message (a single card, or a digest) within the per-member limits WeCom enforces by silently dropping
    the excess (30 a minute, 1000 an hour)."""

    __tablename__ = "staff_notifications"
    __table_args__ = (
        UniqueConstraint("key", name="uq_staff_notification_key"),
        Index("ix_staff_notifications_pending", "corp_id", "status", "userid"),
        Index("ix_staff_notifications_sent", "corp_id", "userid", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    userid: str = Field(max_length=64)
    key: str = Field(max_length=255)  # identifies the news, not the attempt (lead, assignment, rung)
    kind: str = Field(max_length=32)  # new_lead | remind | escalation | reassigned_away | lost_request | …
    lead_id: int | None = Field(default=None)
    title: str = Field(max_length=128)
    description: str = Field(default="", max_length=1024)
    url: str = Field(default="", max_length=512)
    status: str = Field(default=NotificationStatus.PENDING.value, max_length=16)
    batch_key: str = Field(default="", max_length=255)  # the outbox command that carried it
    created_at: datetime = ts_field(default_now=True)
    sent_at: datetime | None = ts_field()


class TransferStatus(StrEnum):
    REQUESTED = "requested"  # command written, WeCom not yet asked
    WAITING = "waiting"  # WeCom accepted it; the customer has 24 h to refuse (transfer_result status 2)
    DONE = "done"  # status 1
    REFUSED = "refused"  # status 3
    LIMIT = "limit"  # status 4: the takeover advisor is at their customer limit
    FAILED = "failed"  # WeCom refused the call (40128 too often, 40129 in progress, …)


class CustomerTransfer(SQLModel, table=True):
    """A 在职继承 transfer of a customer to an advisor (externalcontact/transfer_customer). Counted to keep
    WeCom's rule: at most two per customer per 90 days."""

    __tablename__ = "customer_transfers"
    __table_args__ = (
        UniqueConstraint("command_key", name="uq_customer_transfer_command"),
        Index("ix_customer_transfers_contact", "corp_id", "external_userid", "requested_at"),
        Index(
            "ix_customer_transfers_poll",
            "next_poll_at",
            postgresql_where=text("next_poll_at IS NOT NULL"),
            sqlite_where=text("next_poll_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    external_userid: str = Field(max_length=128)
    handover_userid: str = Field(max_length=64)
    takeover_userid: str = Field(max_length=64)
    lead_id: int | None = Field(default=None)
    command_key: str = Field(max_length=255)
    status: str = Field(default=TransferStatus.REQUESTED.value, max_length=16)
    errcode: int | None = Field(default=None)
    requested_at: datetime = ts_field(default_now=True)
    result_at: datetime | None = ts_field()
    next_poll_at: datetime | None = ts_field()
