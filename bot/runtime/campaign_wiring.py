"""Campaigns inside a Lianyi process: the leader's ticks that plan due runs and follow their WeCom tasks.

- ``campaign_due`` (every ``LIANYI_SOP_TICK_SECONDS``): plans every run whose time has come
  (:func:`scrm.campaigns.service.run_due`), paced at ``LIANYI_CAMPAIGN_CALLS_PER_MINUTE``.
- ``campaign_tracking`` (every 5 s): moves batches whose outbox command finished
  (:func:`scrm.campaigns.tracking.sync_batches`), then, per due batch: reads who confirmed
  (``get_groupmsg_task``) and the per-recipient results (``get_groupmsg_send_result``, every page), cancels the
  task of a cancelled run, reminds owners who have not confirmed (outside quiet hours, as the campaign's
  ``remind`` allows), and closes runs.

The tick calls WeCom directly only to read. A cancellation or a reminder is an outbox command written with the
tracking state that decides it (:mod:`scrm.campaigns.task_commands`), which the tick then runs at once through
the outbox's :class:`~bot.outbox.runner.CommandRunner` (claimed by its key, so a dispatcher that got to it first
runs it instead, and a crash after the commit leaves it to the dispatcher). A cancellation still pending (a
retry) is looked at again at the batch's next poll; one that failed for good is logged and the task is tracked
like any other (without reminders). A WeCom error on one batch leaves it for its next poll; the other batches
go on.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot import metrics
from bot.outbox.runner import CommandRunner
from bot.runtime.scheduler import TickSpec
from bot.settings import ContentSettings, Settings
from bot.web.links import link_signer
from bot.wecom.client import WeComClient
from bot.wecom.errors import WeComError
from scrm.campaigns import task_commands, tracking
from scrm.campaigns.service import run_due
from scrm.campaigns.tracking import DEFAULT_POLL, PollTimes, TrackItem
from scrm.contact_policy import Policy, PolicyError, load_policy
from scrm.db import SessionFactory
from scrm.models import CommandStatus

log = logging.getLogger(__name__)

TRACK_EVERY_SECONDS = 5.0
TASK_SENT = 2  # get_groupmsg_task status: the sender sent it
MAX_PAGES = 50
TRACKER_LEASE = timedelta(seconds=60)  # the claim on a command the tick runs itself
DEFAULT_MAX_ATTEMPTS = int(Settings.model_fields["outbox_max_attempts"].default)


def campaign_policy(settings: ContentSettings) -> Policy:
    """policy.yaml of the SOP folder (a broken file falls back to the defaults and is logged)."""
    try:
        return load_policy(Path(settings.sop_dir) / "policy.yaml")
    except PolicyError as exc:
        log.error("policy.yaml unusable for campaigns; using the defaults", extra={"error": str(exc)})
        return Policy()


async def _task_status(client: WeComClient, item: TrackItem) -> tuple[int, int]:
    """(status, send_time) of the batch sender's part of the task."""
    cursor = ""
    for _ in range(MAX_PAGES):
        page = await client.get_groupmsg_task(item.msgid, cursor=cursor, limit=1000)
        for task in page.get("task_list") or []:
            if str(task.get("userid")) == item.sender:
                return int(task.get("status", 0)), int(task.get("send_time") or 0)
        cursor = str(page.get("next_cursor") or "")
        if not cursor:
            break
    return 0, 0


async def _results(client: WeComClient, item: TrackItem) -> dict[str, int]:
    found: dict[str, int] = {}
    cursor = ""
    for _ in range(MAX_PAGES):
        page = await client.get_groupmsg_send_result(item.msgid, item.sender, cursor=cursor, limit=1000)
        for row in page.get("send_list") or []:
            recipient = str(row.get("chat_id") or row.get("external_userid") or "")
            if recipient:
                found[recipient] = int(row.get("status", 0))
        cursor = str(page.get("next_cursor") or "")
        if not cursor:
            break
    return found


async def _cancel(
    runner: CommandRunner, sessions: SessionFactory, item: TrackItem, now: datetime
) -> task_commands.CommandOutcome | None:
    """Cancel the batch's task through the outbox; its outcome once final, else None (retried later)."""
    key = await task_commands.request_cancel(sessions, item, now)
    await runner.run_key(key)
    outcome = await task_commands.command_outcome(sessions, key)
    if outcome is None or not outcome.final:
        return None
    if outcome.status is not CommandStatus.DONE:
        metrics.CAMPAIGN_TRACKING.labels("error").inc()
        log.warning(
            "group-send task not cancelled at WeCom",
            extra={"msgid": item.msgid, "sender": item.sender, "status": outcome.status.value},
        )
    return outcome


async def _remind(runner: CommandRunner, sessions: SessionFactory, item: TrackItem, now: datetime) -> TrackItem:
    key = await task_commands.reserve_reminder(sessions, item, now)
    if key is None:
        return item
    await runner.run_key(key)
    log.info("group-send owner reminded", extra={"msgid": item.msgid, "sender": item.sender, "key": key})
    metrics.CAMPAIGN_TRACKING.labels("reminded").inc()
    return replace(item, reminders=(*item.reminders, now))


async def track_batch(
    client: WeComClient,
    runner: CommandRunner,
    sessions: SessionFactory,
    item: TrackItem,
    now: datetime,
    policy: Policy,
    times: PollTimes = DEFAULT_POLL,
) -> None:
    status, send_time = await _task_status(client, item)
    if status != TASK_SENT and item.cancelled:
        cancelled = await _cancel(runner, sessions, item, now)
        if cancelled is None or cancelled.status is not CommandStatus.DONE:
            await tracking.reschedule(sessions, item, tracking.next_poll(item, now, times))
            return
        if cancelled.result.get("nothing_to_cancel"):
            status, send_time = await _task_status(client, item)  # sent meanwhile?
        if status != TASK_SENT:
            await tracking.apply_cancelled(sessions, item, now)
            metrics.CAMPAIGN_TRACKING.labels("cancelled").inc()
            return
    if status == TASK_SENT:
        confirmed = datetime.fromtimestamp(send_time, UTC) if send_time else now
        if item.confirmed_at is None:
            await tracking.apply_confirmation(sessions, item, confirmed, now)
            metrics.CAMPAIGN_TRACKING.labels("confirmed").inc()
        await tracking.apply_results(sessions, item, await _results(client, item), now, final=False, times=times)
        return
    if tracking.given_up(item, now):
        await tracking.apply_results(sessions, item, await _results(client, item), now, final=True)
        metrics.CAMPAIGN_TRACKING.labels("given_up").inc()
        return
    due = tracking.reminder_due_at(item)
    if due is not None and due <= now and not policy.in_quiet_hours(now):
        item = await _remind(runner, sessions, item, now)
    await tracking.reschedule(sessions, item, tracking.next_poll(item, now, times))


async def track_once(
    client: WeComClient,
    sessions: SessionFactory,
    now: datetime,
    policy: Policy,
    times: PollTimes = DEFAULT_POLL,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """One tracking pass; returns how many batches were looked at. The commands it writes run on the pass's
    clock (``now``) with up to ``max_attempts`` attempts (``LIANYI_OUTBOX_MAX_ATTEMPTS``)."""
    runner = CommandRunner(
        sessions,
        client,
        instance_id=f"campaign-tracking:{socket.gethostname()}:{os.getpid()}",
        max_attempts=max_attempts,
        lease=TRACKER_LEASE,
        clock=lambda: now,
    )
    await tracking.sync_batches(sessions, now, times=times)
    items = await tracking.claim_for_tracking(sessions, now, lease=times.lease)
    for item in items:
        try:
            await track_batch(client, runner, sessions, item, now, policy, times)
        except WeComError as exc:
            metrics.CAMPAIGN_TRACKING.labels("error").inc()
            log.warning(
                "campaign batch not tracked this time",
                extra={"msgid": item.msgid, "sender": item.sender, "error": str(exc)},
            )
    await tracking.finish_runs(sessions, now)
    return len(items)


def campaign_ticks(
    session_factory: SessionFactory, client: WeComClient, settings: Settings, *, every: float = 5.0
) -> list[TickSpec]:
    links = link_signer(settings)

    async def due(now: datetime) -> None:
        runs = await run_due(
            session_factory,
            settings.corp_id,
            now,
            campaign_policy(settings),
            calls_per_minute=settings.campaign_calls_per_minute,
            links=links,
        )
        for run in runs:
            metrics.CAMPAIGN_TARGETS.labels("planned").inc(run.targets - run.skipped)
            metrics.CAMPAIGN_TARGETS.labels("skipped").inc(run.skipped)

    times = PollTimes(early=timedelta(seconds=settings.campaign_poll_seconds))

    async def track(now: datetime) -> None:
        policy = campaign_policy(settings)
        await track_once(client, session_factory, now, policy, times, max_attempts=settings.outbox_max_attempts)

    return [TickSpec("campaign_due", every, due), TickSpec("campaign_tracking", TRACK_EVERY_SECONDS, track)]
