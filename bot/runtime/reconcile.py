"""Reconciliation with WeCom after downtime: the leader brings in what the callbacks missed.

While no process listens, WeCom's callbacks fail and, after its retries, are gone: customers added, deleted or
moved between groups meanwhile would stay unknown until someone ran ``lianyi sync``. A reconciliation pass reads
what WeCom holds and applies it through :mod:`scrm.sync.reconcile`:

1. ``reconcile_contacts``: the staff members with customer-contact permission, ≤100 per batch/get_by_user call,
   paged by cursor; found relations are applied (and, when new since the previous pass, enrolled in the SOPs
   without welcome), relations WeCom no longer lists are marked deleted.
2. ``reconcile_groups``: groupchat/list paged, groupchat/get each (:func:`scrm.sync.groups.apply_group_detail`);
   groups no longer listed are dismissed.

Rate-limited by the WeCom client's API limiter (the calls of the full sync, with its patience for busy answers).
Resumable: a batch of staff and a page of groups are checkpointed in ``sync_checkpoints`` (steps ``reconcile*``,
apart from ``lianyi sync``'s) in the transaction that applies them, so a pass interrupted by a crash continues
where it stopped. A batch of staff is the unit: its listing must be complete to tell what WeCom no longer lists.

When: :class:`ReconcileTick` checks every few seconds on the leader and runs a pass at leader start (a process
start, or a leadership taken over), every ``LIANYI_RECONCILE_MINUTES``, and once more after relations it had to
leave to their callbacks (created less than :data:`~scrm.sync.reconcile` ``SETTLE`` ago) have settled. On a
database that never had a pass, the first one only records a baseline: the initial import is ``lianyi sync``'s,
and customers from before the baseline are never enrolled in SOPs by a reconciliation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select

from bot.runtime.fullsync import BATCH_LIMIT, BATCH_USERIDS, GROUP_PAGE, FullSync, SyncClient, chunks
from bot.runtime.scheduler import TickSpec
from bot.wecom.errors import FatalError
from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.errors import LianyiError
from scrm.lifecycle import LifecycleHooks
from scrm.models import Staff, SyncCheckpoint
from scrm.rows import assign, get_or_create
from scrm.sync import groups, reconcile

log = logging.getLogger(__name__)

PASS, CONTACTS, GROUPS = "reconcile", "reconcile_contacts", "reconcile_groups"
SINCE_SCOPE = "since"  # (PASS, "since").cursor: relations created after it are enrolled by this pass
SETTLE = timedelta(seconds=30)  # a found relation younger than this is left to its add callback (20 s welcome)
CHECK_SECONDS = 5.0
FAILURE_PAUSE_SECONDS = 60.0


class PassInterrupted(LianyiError):
    """The process is stopping: the pass ends between two checkpoints and resumes at the next leader start."""


@dataclass
class ReconcileReport:
    applied: int = 0
    enrolled: int = 0
    deleted: int = 0
    groups: int = 0
    dismissed: int = 0
    deferred_newest: datetime | None = None
    baseline: bool = False


class Reconciliation(FullSync):
    """One pass (see the module docstring); reuses the full sync's checkpoints and call patience."""

    steps = (CONTACTS, GROUPS)

    def __init__(
        self,
        client: SyncClient,
        sessions: SessionFactory,
        corp_id: str,
        *,
        hooks: LifecycleHooks,
        now: Callable[[], datetime],
        backoff: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stop: asyncio.Event | None = None,
    ) -> None:
        super().__init__(client, sessions, corp_id, backoff=backoff)
        self.hooks = hooks
        self.now = now
        self._stop = stop
        self.result = ReconcileReport()
        self._since: datetime | None = None

    async def run_pass(self) -> ReconcileReport:
        if not await self._begin():
            self.result.baseline = True
            return self.result
        await self._load_checkpoints()
        if not self._done(CONTACTS):
            await self._reconcile_contacts()
        if not self._done(GROUPS):
            await self._reconcile_groups()
        async with write_transaction(self.sessions, urgent=False) as session:
            await self._save(session, PASS, cursor=self._cursor(PASS), done=True)
        return self.result

    def _check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise PassInterrupted("the process is stopping; the pass resumes from its checkpoints")

    async def _begin(self) -> bool:
        """Start a pass or resume the unfinished one; False when this database had none (a baseline is recorded)."""
        cutoff = (self.now() - SETTLE).isoformat()
        async with write_transaction(self.sessions, urgent=False) as session:
            keys = {"corp_id": self.corp_id, "step": PASS}
            current, first = await get_or_create(session, SyncCheckpoint, {**keys, "scope": ""}, {"cursor": cutoff})
            since, _ = await get_or_create(session, SyncCheckpoint, {**keys, "scope": SINCE_SCOPE}, {"done": True})
            if first:
                current.done = True
                return False
            if current.done:  # a new pass: everything after the previous pass's cut-off is new
                assign(since, {"cursor": current.cursor})
                assign(current, {"cursor": cutoff, "done": False})
                await self._reset_steps(session)
            self._since = datetime.fromisoformat(since.cursor) if since.cursor else None
            self._checkpoints[(PASS, "")] = current
        return True

    async def _reset_steps(self, session: Any) -> None:
        rows = await session.exec(
            select(SyncCheckpoint).where(
                SyncCheckpoint.corp_id == self.corp_id, col(SyncCheckpoint.step).in_(self.steps)
            )
        )
        for row in rows.all():
            assign(row, {"done": False, "cursor": ""})

    async def _load_checkpoints(self) -> None:
        async with self.sessions() as session:
            query = select(SyncCheckpoint).where(
                SyncCheckpoint.corp_id == self.corp_id, col(SyncCheckpoint.step).in_(self.steps)
            )
            rows = (await session.exec(query)).all()
        self._checkpoints.update({(r.step, r.scope): r for r in rows})

    # ---- contacts ---------------------------------------------------------------------------------------

    async def _reconcile_contacts(self) -> None:
        async with self.sessions() as session:
            result = await session.exec(
                select(Staff.userid).where(Staff.corp_id == self.corp_id, col(Staff.has_contact_permission).is_(True))
            )
            userids = sorted(result.all())
        for chunk in chunks(userids, BATCH_USERIDS):
            scope = f"{chunk[0]}..{chunk[-1]}"
            if not self._done(CONTACTS, scope):
                self._check_stop()
                await self._reconcile_chunk(chunk, scope)
        async with write_transaction(self.sessions, urgent=False) as session:
            await self._save(session, CONTACTS, done=True)

    async def _reconcile_chunk(self, chunk: list[str], scope: str) -> None:
        listed_at = self.now()
        listed: set[reconcile.Pair] = set()
        cursor = ""
        while True:
            fetch = functools.partial(self.client.batch_get_by_user, chunk, cursor, BATCH_LIMIT)
            body = await self._call("batch/get_by_user", fetch)
            entries = [e for e in body.get("external_contact_list") or [] if isinstance(e, dict)]
            cursor = str(body.get("next_cursor") or "")
            async with write_transaction(self.sessions, urgent=False) as session:
                page = await reconcile.apply_listing_page(
                    session,
                    self.corp_id,
                    entries,
                    settled_before=self.now() - SETTLE,
                    enrol_after=self._since,
                    hooks=self.hooks,
                )
            self._count_page(page)
            listed |= page.listed
            if not cursor:
                break
        async with write_transaction(self.sessions, urgent=False) as session:
            self.result.deleted += await reconcile.mark_unlisted_deleted(
                session, self.corp_id, chunk, listed, listed_at=listed_at, hooks=self.hooks
            )
            await self._save(session, CONTACTS, scope, done=True)

    def _count_page(self, page: reconcile.ListingPage) -> None:
        self.result.applied += page.applied
        self.result.enrolled += page.enrolled
        newest = self.result.deferred_newest
        if page.deferred_newest is not None and (newest is None or page.deferred_newest > newest):
            self.result.deferred_newest = page.deferred_newest

    # ---- groups -----------------------------------------------------------------------------------------

    async def _reconcile_groups(self) -> None:
        listed_at, written_before = self.now(), utcnow()
        listed: set[str] = set()
        cursor = ""  # the listing must be whole to tell what is gone, so a resumed pass lists again from the start
        while True:
            fetch = functools.partial(self.client.groupchat_list, cursor=cursor, limit=GROUP_PAGE)
            body = await self._call("groupchat/list", fetch)
            chat_ids = [str(g["chat_id"]) for g in body.get("group_chat_list") or [] if g.get("chat_id")]
            listed.update(chat_ids)
            for chat_id in chat_ids:
                if not self._done(GROUPS, chat_id):
                    self._check_stop()
                    await self._reconcile_group(chat_id)
            cursor = str(body.get("next_cursor") or "")
            if not cursor:
                break
        async with write_transaction(self.sessions, urgent=False) as session:
            self.result.dismissed += await reconcile.dismiss_unlisted_groups(
                session, self.corp_id, listed, listed_at=listed_at, written_before=written_before
            )
            await self._save(session, GROUPS, done=True)

    async def _reconcile_group(self, chat_id: str) -> None:
        try:
            body = await self._call("groupchat/get", functools.partial(self.client.groupchat_get, chat_id, need_name=1))
        except FatalError as exc:  # dismissed between list and get, or no permission: the next pass sees it
            log.warning("groupchat/get refused during reconciliation", extra={"chat_id": chat_id, "error": str(exc)})
            return
        async with write_transaction(self.sessions, urgent=False) as session:
            await groups.apply_group_detail(session, self.corp_id, dict(body.get("group_chat") or {}))
            await self._save(session, GROUPS, chat_id, done=True)
        self.result.groups += 1


class ReconcileTick:
    """Decides when a pass is due (see the module docstring); a :class:`TickSpec` runs it every few seconds."""

    def __init__(
        self,
        client: SyncClient,
        sessions: SessionFactory,
        corp_id: str,
        *,
        hooks: LifecycleHooks,
        every: timedelta,
        now: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._client, self._sessions, self._corp_id = client, sessions, corp_id
        self._hooks, self._every, self._now, self._monotonic = hooks, every, now, monotonic
        self._stop = stop
        self._due_at = 0.0  # monotonic time of the next pass
        self._last_check: float | None = None

    async def __call__(self, _tick_time: datetime) -> None:
        clock = self._monotonic()
        if self._last_check is None or clock - self._last_check > 3 * CHECK_SECONDS:
            self._due_at = clock  # leader start: a process start, or leadership taken over after a gap
        self._last_check = clock
        if clock < self._due_at:
            return
        self._due_at = clock + min(self._every.total_seconds(), FAILURE_PAUSE_SECONDS)  # if the pass fails
        pass_ = Reconciliation(
            self._client, self._sessions, self._corp_id, hooks=self._hooks, now=self._now, stop=self._stop
        )
        try:
            report = await pass_.run_pass()
        except PassInterrupted:
            log.info("reconciliation interrupted by shutdown; the next leader resumes it")
            return
        self._due_at = self._monotonic() + self._every.total_seconds()
        if report.deferred_newest is not None:
            wait = (report.deferred_newest + SETTLE - self._now()).total_seconds() + CHECK_SECONDS
            self._due_at = min(self._due_at, self._monotonic() + max(wait, CHECK_SECONDS))
        self._last_check = self._monotonic()
        log.info(
            "reconciliation with WeCom finished" if not report.baseline else "reconciliation baseline recorded",
            extra={
                "applied": report.applied,
                "enrolled": report.enrolled,
                "deleted": report.deleted,
                "groups": report.groups,
                "dismissed": report.dismissed,
                "deferred": report.deferred_newest is not None,
            },
        )


def reconcile_ticks(
    client: SyncClient,
    sessions: SessionFactory,
    corp_id: str,
    *,
    hooks: LifecycleHooks,
    minutes: float,
    now: Callable[[], datetime],
    stop: asyncio.Event | None = None,
) -> list[TickSpec]:
    """The reconciliation tick, or none when ``minutes`` is 0 (``LIANYI_RECONCILE_MINUTES``); ``stop`` (the
    process's shutdown) ends a running pass at its next checkpoint."""
    if minutes <= 0:
        return []
    every = timedelta(minutes=minutes)
    tick = ReconcileTick(client, sessions, corp_id, hooks=hooks, every=every, now=now, stop=stop)
    return [TickSpec("reconcile", CHECK_SECONDS, tick)]
