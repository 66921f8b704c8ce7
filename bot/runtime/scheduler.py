"""Leader-only periodic ticks under APScheduler.

Every tick computes a slot from the clock (e.g. the hour) and writes work with ids derived from it, so a
second leader, a restart or a retry of the same tick cannot enqueue anything twice (arq's cron ids).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.runtime.leader import LeaderLock
from scrm.db import SessionFactory, write_transaction
from scrm.maintenance import enqueue_stale_group_refetch, enqueue_tag_refresh

log = logging.getLogger(__name__)

Tick = Callable[[datetime], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TickSpec:
    name: str
    every_seconds: float
    run: Tick


class LeaderScheduler:
    def __init__(
        self,
        *,
        leader: LeaderLock,
        now: Callable[[], datetime],
        notify_outbox: Callable[[], None],
        renew_seconds: float = 5.0,
    ) -> None:
        self._leader = leader
        self._now = now
        self._notify_outbox = notify_outbox
        self._renew_seconds = renew_seconds
        self._is_leader = False
        self._ticks: list[TickSpec] = []
        self._stopping = False
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        # a tick that outlasts its interval is simply skipped once (max_instances=1); that is not a warning
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    def add_tick(self, spec: TickSpec) -> None:
        self._ticks.append(spec)

    async def renew(self) -> None:
        try:
            self._is_leader = await self._leader.acquire_or_renew()
        except Exception:
            log.exception("leader lock renewal failed; stepping down")
            self._is_leader = False

    async def run_tick(self, spec: TickSpec) -> None:
        if not self._is_leader or self._stopping:
            return
        self._running += 1
        self._idle.clear()
        try:
            await spec.run(self._now())
        except Exception:
            log.exception("tick failed", extra={"tick": spec.name})
        else:
            self._notify_outbox()
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def start(self) -> None:
        await self.renew()
        self._scheduler.add_job(
            self.renew,
            "interval",
            seconds=self._renew_seconds,
            id="leader-renew",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        for spec in self._ticks:
            self._scheduler.add_job(
                self.run_tick,
                "interval",
                args=[spec],
                seconds=spec.every_seconds,
                id=f"tick:{spec.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,  # a run the busy loop made late still runs (once), not "missed by"
            )
        self._scheduler.start()

    async def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Start no new tick, let running ones finish (up to ``grace_seconds``), then let go of the lock."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        except TimeoutError:
            log.warning("ticks still running at shutdown; they are cancelled", extra={"running": self._running})
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await self._leader.release()
        self._is_leader = False


def maintenance_ticks(session_factory: SessionFactory, corp_id: str) -> list[TickSpec]:
    """The spine's ticks: hourly tag mirror, and a daily refetch of groups we have not heard about."""

    async def refresh_tags(now: datetime) -> None:
        async with write_transaction(session_factory) as session:
            await enqueue_tag_refresh(session, corp_id, slot=now.strftime("%Y%m%d%H"))

    async def refetch_stale_groups(now: datetime) -> None:
        async with write_transaction(session_factory) as session:
            count = await enqueue_stale_group_refetch(session, corp_id, now=now, max_age=timedelta(hours=24))
        if count:
            log.info("stale groups queued for refetch", extra={"count": count})

    return [
        TickSpec("refresh_corp_tags", 3600, refresh_tags),
        TickSpec("refetch_stale_groups", 600, refetch_stale_groups),
    ]
