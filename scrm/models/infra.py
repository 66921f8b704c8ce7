"""Plumbing tables: the SQL inbox, the outbox, dead letters, the audit log and sync checkpoints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class InboxStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


class InboxEvent(SQLModel, table=True):
    """The SQL inbox backend: one row per distinct callback (dedup_key is unique)."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_inbox_dedup_key"),
        Index("ix_inbox_pending", "status", "partition", "id"),
        Index("ix_inbox_key_pending", "ordering_key", "status", "id"),  # head-of-key lookup when claiming
        Index("ix_inbox_status_id", "status", "id"),  # oldest pending first when claiming
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(default="", max_length=64, index=True)
    dedup_key: str = Field(max_length=255)
    ordering_key: str = Field(max_length=255)
    partition: int = Field(default=0)
    event_type: str = Field(max_length=128)
    payload: dict[str, Any] = json_field(default={})
    status: str = Field(default=InboxStatus.PENDING.value, max_length=16)
    attempts: int = Field(default=0)
    available_at: datetime = ts_field(default_now=True)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = ts_field()
    last_error: str | None = Field(default=None)
    received_at: datetime = ts_field(default_now=True)
    processed_at: datetime | None = ts_field()


class CommandStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # WeCom accepted it (or said it was already done)
    FAILED = "failed"  # WeCom refused it for good (e.g. 84061 no relationship)
    EXPIRED = "expired"  # its deadline passed before it could run (welcome after 20 s)
    DEAD = "dead"  # retries exhausted; see dead_letters
    # a call may have reached WeCom (crash or lost answer) and nothing can tell whether it did; see
    # ``lianyi deadletter unknown``
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self is not CommandStatus.PENDING and self is not CommandStatus.RUNNING


class OutboxCommand(SQLModel, table=True):
    """An outbound WeCom action, written in the same transaction as the state change that caused it."""

    __tablename__ = "outbox_commands"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
        Index("ix_outbox_due", "status", "not_before"),
        # the dispatcher's claim (earliest deadline first) only ever looks at open commands: a partial index
        # stays small however many finished commands accumulate
        Index(
            "ix_outbox_open_by_deadline",
            "deadline",
            "not_before",
            postgresql_where=text("status IN ('pending', 'running')"),
            sqlite_where=text("status IN ('pending', 'running')"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    payload: dict[str, Any] = json_field(default={})
    status: str = Field(default=CommandStatus.PENDING.value, max_length=16)
    attempts: int = Field(default=0)
    not_before: datetime = ts_field(default_now=True)
    deadline: datetime | None = ts_field()
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = ts_field()
    last_errcode: int | None = Field(default=None)
    last_error: str | None = Field(default=None)
    result: dict[str, Any] | None = json_field()
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)
    finished_at: datetime | None = ts_field()
    # set (committed) just before a call of a command with a deadline; an attempt WeCom answered with an error
    # puts back the value it had, so it is set exactly when some call may have reached WeCom unanswered
    call_started_at: datetime | None = ts_field()


class DeadLetter(SQLModel, table=True):
    """An inbox event or outbox command that exhausted its retries; replayable from the CLI."""

    __tablename__ = "dead_letters"

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(default="", max_length=64, index=True)
    source: str = Field(max_length=16)  # inbox | outbox
    ref: str = Field(max_length=255)  # dedup key or command idempotency key
    event_type: str = Field(max_length=128)
    ordering_key: str = Field(default="", max_length=255)
    payload: dict[str, Any] = json_field(default={})
    error: str = Field(default="")
    attempts: int = Field(default=0)
    created_at: datetime = ts_field(default_now=True)
    replayed_at: datetime | None = ts_field()


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_subject", "corp_id", "subject_type", "subject_id"),
        Index("ix_audit_created", "created_at"),  # lianyi audit list: newest first
        Index("ix_audit_actor_created", "actor", "created_at"),  # … of one user (--user)
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(default="", max_length=64, index=True)
    actor: str = Field(default="system", max_length=128)  # the acting user's username, or "system"
    action: str = Field(max_length=64)
    subject_type: str = Field(default="", max_length=32)
    subject_id: str = Field(default="", max_length=128)
    detail: dict[str, Any] | None = json_field()  # counts, reasons; before_sha256 / after_sha256 (scrm.audit)
    created_at: datetime = ts_field(default_now=True)


class SyncCheckpoint(SQLModel, table=True):
    """Progress of ``lianyi sync`` so an interrupted run resumes where it stopped."""

    __tablename__ = "sync_checkpoints"
    __table_args__ = (UniqueConstraint("corp_id", "step", "scope", name="uq_sync_checkpoint"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64, index=True)
    step: str = Field(max_length=32)  # staff | contacts | groups | tags
    scope: str = Field(default="", max_length=255)  # e.g. a userid batch
    cursor: str = Field(default="")
    done: bool = Field(default=False)
    updated_at: datetime = ts_field(default_now=True)
