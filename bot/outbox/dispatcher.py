"""The outbox dispatcher: claims due commands, runs them through the WeCom client, records a final state.

This module is the loop (claim batches, two slot pools, wake-ups); claiming, running one command and writing
its outcome are :class:`~bot.outbox.runner.CommandRunner`'s.

Life of a command::

    pending ──claim──▶ running ──▶ done      (WeCom accepted it; result stored)
       ▲                  │  ├────▶ failed    (FatalError: retrying cannot help)
       │                  │  ├────▶ expired   (its deadline passed, or less than ``deadline_margin`` is left)
       │                  │  ├────▶ unknown   (instead of expired/dead: a call may have reached WeCom unanswered)
       └──retry/backoff───┘  └────▶ dead      (retries exhausted; a DeadLetter row with source "outbox")

Welcomes and commands with a deadline commit ``call_started_at`` before each call (a WeCom error answer puts the
old value back), so after a crash or a lost answer the next owner knows a call may have got through: past the
deadline nothing can be asked of WeCom and the command ends ``unknown`` (``lianyi deadletter unknown``), never
``expired``, which is kept for commands whose call never started.

Claiming is one statement on both backends: ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP
LOCKED) RETURNING …``. On PostgreSQL the row locks let many dispatchers claim side by side without ever
taking the same row; SQLite ignores ``FOR UPDATE`` and serialises writers, so the conditional UPDATE is the
claim. A claim sets a lease (``claimed_until``); a command still ``running`` after its lease belongs to a
crashed process and is claimed again. ``attempts`` is incremented by the claim, so a command that crashes
its process also ends dead eventually, and it fences the result: a dispatcher whose lease was taken over
cannot overwrite the new owner's outcome.

Calls run under ``client.deadline(...)``: never past the command's deadline and never later than a
quarter of the lease before the lease ends, so a rate-limit wait turns into a rescheduled command instead
of a lease that silently runs out. A claimed command that waited for a free slot until too little of its
lease is left is released unharmed (its claim does not count as an attempt). An app message whose member
has no free slot in our per-member limiter (:class:`~bot.wecom.errors.MemberSlotUnavailable`, raised before
anything is sent) is *postponed* to when the slot frees up, also without spending an attempt; so is a call our
per-API limiter cannot fit before the call deadline (:class:`~bot.wecom.errors.LimiterRefused`: a full window or
a block after 45009 — a group send postponed this way is not mistaken for one whose answer was lost), so a burst of
notifications to one advisor is spread over the following minutes instead of dying. Outcomes are written through
:class:`~bot.outbox.outcomes.OutcomeWriter` (group commit).

Urgency: a command with a ``deadline`` (a welcome message: 20 s) is *urgent*. Claims take urgent commands
first (earliest deadline first) and the two classes run in separate slot pools: ``concurrency`` slots for
urgent commands, a quarter of that (at least one) for the others, which share the process's CPU with the
welcomes. When only one pool has room, only that class is claimed. So a burst of ``fetch_contact`` can
neither fill the claim window nor the slots or the CPU a welcome needs, and it still always progresses.
``run_once`` claims one batch, urgent commands first.

Welcome 41051 is decided by the SEND_WELCOME executor (see :mod:`bot.outbox.executors`): failed on the
first attempt, done ("already sent") after an uncertain earlier attempt; never retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from bot.outbox.runner import CommandRunner
from bot.settings import Settings
from bot.wecom.client import WeComClient
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import OutboxCommand

log = logging.getLogger(__name__)


class OutboxDispatcher:
    def __init__(
        self,
        session_factory: SessionFactory,
        client: WeComClient,
        settings: Settings,
        *,
        instance_id: str,
        lease_seconds: float = 60,
        batch: int = 32,
        concurrency: int = 16,
        clock: Callable[[], datetime] = utcnow,
        poll_interval: float = 0.5,
        deadline_margin: float = 1.0,
        hooks: LifecycleHooks = NO_HOOKS,
    ) -> None:
        if lease_seconds < 10:
            raise ValueError("lease_seconds must be at least 10 (calls get three quarters of it)")
        self._runner = CommandRunner(
            session_factory,
            client,
            instance_id=instance_id,
            max_attempts=settings.outbox_max_attempts,
            lease=timedelta(seconds=lease_seconds),
            clock=clock,
            deadline_margin=timedelta(seconds=deadline_margin),
            hooks=hooks,
        )
        self._batch = batch
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        # claimed commands, running or waiting for a slot: [other, urgent]
        self._inflight: tuple[set[asyncio.Task[None]], set[asyncio.Task[None]]] = (set(), set())
        self._limits = (max(1, concurrency // 4), concurrency)  # slots: [other, urgent]
        self._slots = (asyncio.Semaphore(self._limits[0]), asyncio.Semaphore(self._limits[1]))
        self._backlog = [False, False]  # per class [other, urgent]: its last claim was full, more are due

    def wake(self) -> None:
        """New commands were committed: claim now instead of at the next poll."""
        self._wakeup.set()

    # --- loop -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run commands until ``stop`` is set; then let the claimed ones finish.

        Per urgency class, up to its slot count of commands run at once and up to one more ``batch`` waits
        claimed, so claims are batched under load (one claim per command would cap throughput at one DB
        commit per command) while an idle dispatcher claims a single new command the moment it is woken.
        """
        stop_watcher = asyncio.create_task(self._wake_when(stop))
        try:
            while not stop.is_set():
                self._wakeup.clear()
                wants = {urgent: self._want(urgent) for urgent in (True, False)}
                full = False
                if wants[True] and wants[False]:  # room in both pools: one claim, urgent commands first
                    want = min(self._batch, wants[True] + wants[False])
                    claimed = await self._claim_or_log(want)
                    full = len(claimed) == want
                    self._backlog = [full, full]
                else:
                    claimed = []
                    for urgent, want in wants.items():
                        if want:  # a class with no room keeps its backlog flag: its finished tasks wake us
                            batch = await self._claim_or_log(want, urgent=urgent)
                            claimed += batch
                            self._backlog[urgent] = len(batch) == want
                            full = full or len(batch) == want
                for command in claimed:
                    self._spawn(command, command.deadline is not None)
                if full:
                    continue  # more may be due right now
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wakeup.wait()
        finally:
            stop_watcher.cancel()
            with suppress(asyncio.CancelledError):
                await stop_watcher
            running = [*self._inflight[True], *self._inflight[False]]
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _want(self, urgent: bool) -> int:
        """How many commands of one urgency class to claim now (0: none)."""
        inflight = len(self._inflight[urgent])
        limit = self._limits[urgent]
        want = min(self._batch, limit + self._batch - inflight)
        return want if want > 0 and (inflight < limit or want >= self._batch // 2) else 0

    async def run_once(self) -> int:
        """Claim one batch (urgent commands first), run it (per urgency class at most its slot count at a time)
        and return how many were claimed."""
        claimed = await self._runner.claim(self._batch)
        await asyncio.gather(*(self._run_in_slot(command, command.deadline is not None) for command in claimed))
        return len(claimed)

    async def _wake_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    def _spawn(self, command: OutboxCommand, urgent: bool) -> None:
        task = asyncio.create_task(self._run_in_slot(command, urgent), name=f"outbox:{command.id}")
        self._inflight[urgent].add(task)
        task.add_done_callback(functools.partial(self._finished, urgent))

    def _finished(self, urgent: bool, task: asyncio.Task[None]) -> None:
        self._inflight[urgent].discard(task)
        if self._backlog[urgent]:
            self._wakeup.set()  # this class's last claim was full: more of its commands are probably due

    async def _run_in_slot(self, command: OutboxCommand, urgent: bool) -> None:
        async with self._slots[urgent]:
            await self._runner.run(command)

    async def _claim_or_log(self, limit: int, *, urgent: bool | None = None) -> list[OutboxCommand]:
        try:
            return await self._runner.claim(limit, urgent=urgent)
        except (SQLAlchemyError, OSError) as exc:
            log.error("outbox claim failed; retrying at the next poll", extra={"error": repr(exc)})
            return []
