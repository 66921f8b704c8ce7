"""SOP engine tables: template versions, enrolments, step runs, and the touch ledger the contact policy counts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class SopVersion(SQLModel, table=True):
    """A template exactly as an enrolment started it: the YAML mapping plus its message files.

    Not tenant data (one SOP folder serves every corp of a deployment), hence no corp_id.
    """

    __tablename__ = "sop_versions"
    __table_args__ = (UniqueConstraint("template_id", "version", name="uq_sop_version"),)

    id: int | None = Field(default=None, primary_key=True)
    template_id: str = Field(max_length=64)
    version: str = Field(max_length=32)
    name: str = Field(default="", max_length=128)
    kind: str = Field(max_length=16)
    spec: dict[str, Any] = json_field(default={})
    created_at: datetime = ts_field(default_now=True)


class EnrolmentStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"  # every step ran (or was skipped by its `when`/the policy)
    EXITED = "exited"  # an exit condition held
    CANCELLED = "cancelled"  # the template was disabled or deleted, or the subject vanished


class SopEnrolment(SQLModel, table=True):
    """One subject (a contact or a group) going through one template.

    ``occurrence`` separates repeated runs of the same template for the same subject: "" for once-only
    event triggers, the date for a date trigger, the fire time for a cron trigger, the message id for a
    keyword trigger. ``next_due_at`` is indexed for open enrolments only, so a tick reads due work without
    scanning the rest.
    """

    __tablename__ = "sop_enrolments"
    __table_args__ = (
        UniqueConstraint("corp_id", "template_id", "subject_type", "subject_id", "occurrence", name="uq_sop_enrolment"),
        Index(
            "ix_sop_enrolments_due",
            "next_due_at",
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        Index("ix_sop_enrolments_subject", "corp_id", "subject_type", "subject_id", "status"),
        Index("ix_sop_enrolments_template", "template_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    template_id: str = Field(max_length=64)
    version: str = Field(max_length=32)
    subject_type: str = Field(max_length=16)  # contact | group
    subject_id: str = Field(max_length=128)  # external_userid | chat_id
    occurrence: str = Field(default="", max_length=64)
    staff_userid: str = Field(default="", max_length=64)  # the contact's staff member (sender of 1v1 sends)
    priority: int = Field(default=50)
    status: str = Field(default=EnrolmentStatus.ACTIVE.value, max_length=16)
    next_step: int = Field(default=0)
    next_due_at: datetime | None = ts_field()
    step_due_since: datetime | None = ts_field()  # when the current step first fell due (defer limit)
    context: dict[str, Any] = json_field(default={})  # the trigger's facts (event, text, tag, welcome code…)
    enrolled_at: datetime = ts_field(default_now=True)
    ended_at: datetime | None = ts_field()
    end_reason: str | None = Field(default=None, max_length=64)
    updated_at: datetime = ts_field(default_now=True)


class SopStepRun(SQLModel, table=True):
    """A step that ran, claimed by its deterministic key in the transaction that wrote its commands."""

    __tablename__ = "sop_step_runs"
    __table_args__ = (
        UniqueConstraint("step_key", name="uq_sop_step_key"),
        Index("ix_sop_step_runs_enrolment", "enrolment_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    enrolment_id: int = Field(foreign_key="sop_enrolments.id")
    step_key: str = Field(max_length=255)
    step_id: str = Field(max_length=32)
    action: str = Field(max_length=32)
    outcome: str = Field(max_length=16)  # sent | skipped | done
    reason: str = Field(default="", max_length=64)
    due_at: datetime | None = ts_field()
    ran_at: datetime = ts_field(default_now=True)
    commands: list[str] | None = json_field()


class ContactTouch(SQLModel, table=True):
    """Every message that reaches a customer or a group (or is handed to an advisor to send): the ledger the
    contact policy's caps and WeCom's group-send quota are counted from, shared by SOPs, campaigns and leads.
    """

    __tablename__ = "contact_touches"
    __table_args__ = (
        UniqueConstraint("ref", name="uq_contact_touch_ref"),
        Index("ix_contact_touches_recipient", "corp_id", "recipient_type", "recipient_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    recipient_type: str = Field(max_length=16)  # contact | group
    recipient_id: str = Field(max_length=128)
    kind: str = Field(max_length=32)  # welcome | private_message | advisor_task | group_message
    source: str = Field(max_length=16)  # welcome | lead | sop | campaign
    counts_cap: bool = Field(default=True)
    counts_quota: bool = Field(default=False)  # a WeCom group send (add_msg_template)
    ref: str = Field(max_length=255)
    at: datetime = ts_field(default_now=True)
