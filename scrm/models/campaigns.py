"""Campaigns (1vN group pushes and 1v1 pushes): the campaign, each run of it, its batches and its targets.

- :class:`Campaign` — what operators define (audience, content, schedule, approval), one row per code.
- :class:`CampaignRun` — one occurrence (``slot``): "now", an ``at`` time, or one cron fire. Unique per
  (campaign, slot), so a second leader or a restart cannot plan an occurrence twice.
- :class:`CampaignBatch` — one ``add_msg_template`` call: one sender, one rendered content, ≤ 2,000 chat ids
  or ≤ 10,000 external userids. Its ``key`` is deterministic and is also the idempotency key of the outbox
  command that creates the WeCom task, so a batch can never become two tasks.
- :class:`CampaignTarget` — one group or contact of a run, with what happened to it (skipped and why, the
  batch it is in, and WeCom's per-recipient send status once tracked).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class CampaignStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"  # 待审批: waits for an operator's approval before anything is sent
    REJECTED = "rejected"  # 已驳回
    SCHEDULED = "scheduled"  # 已排期: approved (or needing none); runs at its time / each cron fire
    DONE = "done"  # 已完成: a one-off campaign whose run was planned (tracking continues on the run)
    CANCELLED = "cancelled"  # 已取消


class RunStatus(StrEnum):
    SENDING = "sending"  # planned: batches are being turned into WeCom tasks
    TRACKING = "tracking"  # every batch has its task (or failed); confirmations and results are polled
    DONE = "done"  # every batch is final
    SKIPPED = "skipped"  # nothing was sent (no target, or deferred past the policy's max_defer_days)
    CANCELLED = "cancelled"


class BatchStatus(StrEnum):
    QUEUED = "queued"  # its outbox command is waiting or running
    CREATED = "created"  # WeCom created the task (msgid known); the owner has to confirm it
    FAILED = "failed"  # the command failed or died; its targets are marked failed
    CANCELLED = "cancelled"  # cancelled before the owner confirmed (or before the task was created)


class TargetStatus(StrEnum):
    PLANNED = "planned"  # in a batch, nothing known yet
    SKIPPED = "skipped"  # not sent: ``reason`` says why (quota, cap_day, cap_week, no_sender…)
    FAILED = "failed"  # the batch failed, or WeCom put the target in fail_list
    UNSENT = "unsent"  # the task exists; the owner has not sent it (send_result status 0)
    SENT = "sent"  # delivered (status 1)
    NOT_FRIEND = "not_friend"  # status 2: no longer a customer / group no longer the sender's
    QUOTA_HIT = "quota_hit"  # status 3: WeCom's group-send quota refused it
    CANCELLED = "cancelled"


FINAL_BATCH_STATUSES = frozenset({BatchStatus.FAILED.value, BatchStatus.CANCELLED.value})


class Campaign(SQLModel, table=True):
    __tablename__ = "campaigns"
    __table_args__ = (
        UniqueConstraint("corp_id", "code", name="uq_campaigns_corp_code"),
        Index("ix_campaigns_due", "status", "next_run_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", max_length=64)
    code: str = Field(max_length=64)
    name: str = Field(default="", max_length=128)
    chat_type: str = Field(max_length=16)  # group | single
    spec: dict[str, Any] = json_field(default={})  # the validated CampaignSpec (scrm.campaigns.spec)
    spec_hash: str = Field(max_length=64)
    schedule_kind: str = Field(max_length=8)  # now | at | cron
    cron: str = Field(default="", max_length=64)
    run_at: datetime | None = ts_field()
    next_run_at: datetime | None = ts_field()
    requires_approval: bool = Field(default=False)
    status: str = Field(max_length=20)
    created_by: str = Field(default="", max_length=64)
    approved_by: str = Field(default="", max_length=64)
    approved_at: datetime | None = ts_field()
    rejected_reason: str = Field(default="", max_length=512)
    cancelled_by: str = Field(default="", max_length=64)
    cancelled_at: datetime | None = ts_field()
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class CampaignRun(SQLModel, table=True):
    __tablename__ = "campaign_runs"
    __table_args__ = (
        UniqueConstraint("campaign_id", "slot", name="uq_campaign_runs_slot"),
        Index("ix_campaign_runs_status", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaigns.id")
    corp_id: str = Field(max_length=64)
    slot: str = Field(max_length=32)  # "now", or the local fire time "2026-12-04T19:00"
    fire_at: datetime = ts_field(nullable=False)
    status: str = Field(max_length=16)
    targets: int = Field(default=0)
    skipped: int = Field(default=0)
    batches: int = Field(default=0)
    note: str = Field(default="", max_length=512)
    planned_at: datetime = ts_field(default_now=True)
    finished_at: datetime | None = ts_field()


class CampaignBatch(SQLModel, table=True):
    __tablename__ = "campaign_batches"
    __table_args__ = (
        UniqueConstraint("key", name="uq_campaign_batches_key"),
        UniqueConstraint("run_id", "batch_no", name="uq_campaign_batches_run_no"),
        Index("ix_campaign_batches_track", "status", "next_track_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="campaign_runs.id")
    campaign_id: int = Field(foreign_key="campaigns.id")
    corp_id: str = Field(max_length=64)
    batch_no: int
    key: str = Field(max_length=255)  # = the outbox command's idempotency key
    sender: str = Field(max_length=64)
    chat_type: str = Field(max_length=16)
    fingerprint: str = Field(max_length=64)  # sha256 of the rendered content
    target_count: int = Field(default=0)
    status: str = Field(max_length=16)
    msgid: str = Field(default="", max_length=128)
    fail_count: int = Field(default=0)
    recovered: bool = Field(default=False)  # the task was found by reconciliation after a lost answer
    confirmed_at: datetime | None = ts_field()  # the sender confirmed (get_groupmsg_task status 2)
    results_final: bool = Field(default=False)  # per-target results read after confirmation (or gave up)
    reminders: list[str] | None = json_field()  # ISO times of remind_groupmsg_send calls
    next_track_at: datetime | None = ts_field()
    error: str = Field(default="", max_length=512)
    # planned at first; once the task exists, when WeCom created it (reminders and polling count from it)
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class CampaignTarget(SQLModel, table=True):
    __tablename__ = "campaign_targets"
    __table_args__ = (
        UniqueConstraint("run_id", "target_id", name="uq_campaign_targets_run_target"),
        Index("ix_campaign_targets_batch", "run_id", "batch_no"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="campaign_runs.id")
    corp_id: str = Field(max_length=64)
    target_type: str = Field(max_length=8)  # group | contact
    target_id: str = Field(max_length=128)  # chat_id | external_userid
    name: str = Field(default="", max_length=128)
    sender: str = Field(default="", max_length=64)
    batch_no: int | None = Field(default=None)
    status: str = Field(max_length=16)
    reason: str = Field(default="", max_length=64)
    updated_at: datetime = ts_field(default_now=True)
