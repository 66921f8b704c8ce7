"""What happened to each batch after planning, kept in the database (the WeCom reads are in ``bot``).

- :func:`sync_batches` moves a queued batch on once its outbox command is final: ``done`` → created (msgid,
  targets unsent until tracked, those in WeCom's fail_list failed), ``failed``/``dead``/``expired`` → failed.
- :func:`claim_for_tracking` hands out created batches whose ``next_track_at`` has come, pushing that time
  on by a lease first (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two leaders never poll one batch at once
  and a crash mid-poll only delays it.
- The tracker then applies what WeCom says: :func:`apply_confirmation`, :func:`apply_results`,
  :func:`apply_cancelled`. What it asks WeCom to do (remind an owner, cancel a task) goes through the outbox:
  :mod:`scrm.campaigns.task_commands`.
- :func:`finish_runs` closes runs whose batches are all final.

Polling (:class:`PollTimes`, default 5 minutes): first a minute after the task exists, every 5 minutes for two
hours, then every 30 minutes; after confirmation the per-recipient results are read, and read again every 5
minutes while some are still unsent, for up to an hour. A task nobody confirmed for three days is given up
(its targets stay ``unsent``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, update
from sqlmodel import col, select

from scrm.campaigns.service import mark_targets
from scrm.campaigns.spec import REMINDS_PER_DAY, CampaignSpec
from scrm.db import SessionFactory, write_transaction
from scrm.models import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignRun,
    CampaignTarget,
    CommandStatus,
    OutboxCommand,
    RunStatus,
    TargetStatus,
)

EARLY_PHASE = timedelta(hours=2)
IN_CHUNK = 900  # ids per IN (...) list: below SQLite's default bound-parameter limit
RESULTS_PATIENCE = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=3)
TRACK_LEASE = timedelta(minutes=2)  # the longest a crash mid-poll holds a batch back
MIN_TRACK_LEASE = timedelta(seconds=10)
REMIND_WINDOW = timedelta(hours=24)  # WeCom: three reminders per message in 24 hours
REMIND_MARGIN = timedelta(minutes=1)  # our clock and WeCom's may differ: never ask at the very edge


@dataclass(frozen=True, slots=True)
class PollTimes:
    """How often tasks are looked at (``LIANYI_CAMPAIGN_POLL_SECONDS`` sets ``early``; the rest follow)."""

    early: timedelta = timedelta(minutes=5)  # every this while the task is young, and for unsent results

    @property
    def first(self) -> timedelta:
        return min(timedelta(minutes=1), self.early)

    @property
    def late(self) -> timedelta:
        return self.early * 6

    @property
    def lease(self) -> timedelta:
        """How long a claimed batch is left alone: two early polls, within 10 s .. 2 minutes (the default polls
        get 2 minutes; a deployment polling every second is not held back 2 minutes by a crashed leader)."""
        return min(TRACK_LEASE, max(MIN_TRACK_LEASE, self.early * 2))


DEFAULT_POLL = PollTimes()
FAILED_COMMANDS = (CommandStatus.FAILED.value, CommandStatus.DEAD.value, CommandStatus.EXPIRED.value)

# get_groupmsg_send_result status → target status
RESULT_STATUS = {
    0: TargetStatus.UNSENT,
    1: TargetStatus.SENT,
    2: TargetStatus.NOT_FRIEND,
    3: TargetStatus.QUOTA_HIT,
}


@dataclass(frozen=True, slots=True)
class TrackItem:
    batch_id: int
    run_id: int
    batch_no: int
    msgid: str
    sender: str
    chat_type: str
    created_at: datetime
    confirmed_at: datetime | None
    reminders: tuple[datetime, ...]
    cancelled: bool  # the run was cancelled: cancel the task unless it was sent
    remind_after: timedelta
    remind_max: int


async def sync_batches(
    session_factory: SessionFactory, now: datetime, *, limit: int = 500, times: PollTimes = DEFAULT_POLL
) -> int:
    """Move queued batches whose command finished; returns how many moved."""
    moved = 0
    async with write_transaction(session_factory) as session:
        rows = (
            await session.exec(
                select(CampaignBatch, OutboxCommand)
                .join(OutboxCommand, col(OutboxCommand.idempotency_key) == col(CampaignBatch.key))
                .where(
                    CampaignBatch.status == BatchStatus.QUEUED.value,
                    col(OutboxCommand.status).in_((CommandStatus.DONE.value, *FAILED_COMMANDS)),
                )
                .limit(limit)
            )
        ).all()
        for batch, command in rows:
            if command.status == CommandStatus.DONE.value:
                result = command.result or {}
                failed = [str(r) for r in result.get("fail_list") or []]
                batch.status = BatchStatus.CREATED.value
                batch.msgid = str(result.get("msgid") or "")
                batch.fail_count = len(failed)
                batch.recovered = bool(result.get("recovered"))
                # from here on created_at is when the WeCom task was created (paced or retried commands run
                # long after planning): reminders, the polling phases and giving up count from it
                batch.created_at = command.finished_at or now
                batch.next_track_at = now + times.first
                await session.exec(  # the task exists: its groups wait for the owner (send_result status 0)
                    update(CampaignTarget)
                    .where(
                        col(CampaignTarget.run_id) == batch.run_id,
                        col(CampaignTarget.batch_no) == batch.batch_no,
                        col(CampaignTarget.status) == TargetStatus.PLANNED.value,
                    )
                    .values(status=TargetStatus.UNSENT.value, updated_at=now)
                )
                for offset in range(0, len(failed), IN_CHUNK):
                    chunk = failed[offset : offset + IN_CHUNK]
                    await session.exec(
                        update(CampaignTarget)
                        .where(col(CampaignTarget.run_id) == batch.run_id, col(CampaignTarget.target_id).in_(chunk))
                        .values(status=TargetStatus.FAILED.value, reason="wecom_fail_list", updated_at=now)
                    )
            else:
                batch.status = BatchStatus.FAILED.value
                batch.error = (command.last_error or command.status)[:512]
                await mark_targets(session, batch.run_id, batch.batch_no, TargetStatus.FAILED, "command_failed")
            batch.updated_at = now
            session.add(batch)
            moved += 1
    return moved


async def claim_for_tracking(
    session_factory: SessionFactory, now: datetime, *, limit: int = 200, lease: timedelta = TRACK_LEASE
) -> list[TrackItem]:
    async with write_transaction(session_factory) as session:
        ids = (
            select(CampaignBatch.id)
            .where(
                CampaignBatch.status == BatchStatus.CREATED.value,
                col(CampaignBatch.results_final).is_(False),
                col(CampaignBatch.next_track_at) <= now,
            )
            .order_by(col(CampaignBatch.next_track_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        batches = (await session.exec(select(CampaignBatch).where(col(CampaignBatch.id).in_(ids)))).all()
        if not batches:
            return []
        await session.exec(
            update(CampaignBatch)
            .where(col(CampaignBatch.id).in_([b.id for b in batches]))
            .values(next_track_at=now + lease)
        )
        run_ids = {b.run_id for b in batches}
        runs = (
            await session.exec(
                select(CampaignRun.id, CampaignRun.status, Campaign.spec)
                .join(Campaign, col(Campaign.id) == col(CampaignRun.campaign_id))
                .where(col(CampaignRun.id).in_(run_ids))
            )
        ).all()
    info = {run_id: (status, CampaignSpec.model_validate(spec).remind) for run_id, status, spec in runs}
    items: list[TrackItem] = []
    for b in batches:
        assert b.id is not None
        status, remind = info[b.run_id]
        items.append(
            TrackItem(
                batch_id=b.id,
                run_id=b.run_id,
                batch_no=b.batch_no,
                msgid=b.msgid,
                sender=b.sender,
                chat_type=b.chat_type,
                created_at=b.created_at,
                confirmed_at=b.confirmed_at,
                reminders=tuple(datetime.fromisoformat(r) for r in b.reminders or []),
                cancelled=status == RunStatus.CANCELLED.value,
                remind_after=remind.after,
                remind_max=remind.max,
            )
        )
    return items


def next_poll(item: TrackItem, now: datetime, times: PollTimes = DEFAULT_POLL) -> datetime:
    """When an unconfirmed task is looked at again (also when its next reminder is due)."""
    age = now - item.created_at
    poll = now + (times.early if age < EARLY_PHASE else times.late)
    reminder = reminder_due_at(item)
    return min(poll, reminder) if reminder is not None and reminder > now else poll


def reminder_due_at(item: TrackItem) -> datetime | None:
    """When the next reminder may go out: ``remind_after`` after creation, then after each reminder; never a
    fourth within 24 hours (plus a minute, for clock skew); None when the campaign's reminders are used up."""
    if len(item.reminders) >= item.remind_max:
        return None
    last = max(item.reminders, default=item.created_at)
    due = last + item.remind_after
    window = sorted(item.reminders)[-REMINDS_PER_DAY:]
    if len(window) >= REMINDS_PER_DAY:
        due = max(due, window[0] + REMIND_WINDOW + REMIND_MARGIN)
    return due


def given_up(item: TrackItem, now: datetime) -> bool:
    return item.confirmed_at is None and now - item.created_at >= GIVE_UP_AFTER


async def reschedule(session_factory: SessionFactory, item: TrackItem, at: datetime) -> None:
    async with write_transaction(session_factory) as session:
        await session.exec(update(CampaignBatch).where(col(CampaignBatch.id) == item.batch_id).values(next_track_at=at))


async def apply_confirmation(
    session_factory: SessionFactory, item: TrackItem, confirmed_at: datetime, now: datetime
) -> None:
    async with write_transaction(session_factory) as session:
        await session.exec(
            update(CampaignBatch)
            .where(col(CampaignBatch.id) == item.batch_id, col(CampaignBatch.confirmed_at).is_(None))
            .values(confirmed_at=confirmed_at, updated_at=now)
        )


async def apply_results(
    session_factory: SessionFactory,
    item: TrackItem,
    results: dict[str, int],
    now: datetime,
    *,
    final: bool,
    times: PollTimes = DEFAULT_POLL,
) -> int:
    """Store WeCom's per-recipient status; returns how many recipients are still unsent. ``final`` closes the
    batch (a given-up task: no more polling)."""
    still_unsent = 0
    confirmed = item.confirmed_at or now
    async with write_transaction(session_factory) as session:
        by_status: dict[TargetStatus, list[str]] = {}
        for recipient, code in results.items():
            status = RESULT_STATUS.get(code, TargetStatus.UNSENT)
            still_unsent += status is TargetStatus.UNSENT
            by_status.setdefault(status, []).append(recipient)
        for status, recipients in by_status.items():
            for offset in range(0, len(recipients), IN_CHUNK):
                await session.exec(
                    update(CampaignTarget)
                    .where(
                        col(CampaignTarget.run_id) == item.run_id,
                        col(CampaignTarget.batch_no) == item.batch_no,
                        col(CampaignTarget.target_id).in_(recipients[offset : offset + IN_CHUNK]),
                    )
                    .values(status=status.value, reason="", updated_at=now)
                )
        done = final or still_unsent == 0 or now - confirmed >= RESULTS_PATIENCE
        await session.exec(
            update(CampaignBatch)
            .where(col(CampaignBatch.id) == item.batch_id)
            .values(results_final=done, next_track_at=None if done else now + times.early, updated_at=now)
        )
    return still_unsent


async def apply_cancelled(session_factory: SessionFactory, item: TrackItem, now: datetime) -> None:
    async with write_transaction(session_factory) as session:
        await session.exec(
            update(CampaignBatch)
            .where(col(CampaignBatch.id) == item.batch_id)
            .values(status=BatchStatus.CANCELLED.value, results_final=True, next_track_at=None, updated_at=now)
        )
        await session.exec(
            update(CampaignTarget)
            .where(
                col(CampaignTarget.run_id) == item.run_id,
                col(CampaignTarget.batch_no) == item.batch_no,
                col(CampaignTarget.status).in_((TargetStatus.PLANNED.value, TargetStatus.UNSENT.value)),
            )
            .values(status=TargetStatus.CANCELLED.value, reason="cancelled", updated_at=now)
        )


async def finish_runs(session_factory: SessionFactory, now: datetime) -> int:
    """Runs in flight whose batches are all final become tracking (all tasks exist) or done."""
    changed = 0
    async with write_transaction(session_factory) as session:
        open_batches = (
            select(CampaignBatch.run_id, func.count().label("n"))
            .where(
                (col(CampaignBatch.status) == BatchStatus.QUEUED.value)
                | and_(
                    col(CampaignBatch.status) == BatchStatus.CREATED.value, col(CampaignBatch.results_final).is_(False)
                )
            )
            .group_by(col(CampaignBatch.run_id))
            .subquery()
        )
        queued = (
            select(CampaignBatch.run_id)
            .where(CampaignBatch.status == BatchStatus.QUEUED.value)
            .group_by(col(CampaignBatch.run_id))
            .subquery()
        )
        runs = (
            await session.exec(
                select(CampaignRun, open_batches.c.n, queued.c.run_id)
                .outerjoin(open_batches, open_batches.c.run_id == col(CampaignRun.id))
                .outerjoin(queued, queued.c.run_id == col(CampaignRun.id))
                .where(
                    col(CampaignRun.status).in_(
                        (RunStatus.SENDING.value, RunStatus.TRACKING.value, RunStatus.CANCELLED.value)
                    ),
                    col(CampaignRun.finished_at).is_(None),
                )
            )
        ).all()
        for run, open_count, has_queued in runs:
            if not open_count:
                if run.status != RunStatus.CANCELLED.value:
                    run.status = RunStatus.DONE.value
                run.finished_at = now
            elif run.status == RunStatus.SENDING.value and has_queued is None:
                run.status = RunStatus.TRACKING.value
            else:
                continue
            session.add(run)
            changed += 1
    return changed
