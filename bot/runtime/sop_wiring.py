"""The SOP engine inside a Lianyi process: the leader-only ticks (due steps, schedules, the silence scan) and the
hot reload of the SOP folder, which runs in a worker thread so no template can stall the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from bot.runtime.scheduler import TickSpec
from scrm.db import SessionFactory
from scrm.sop.catalog import CatalogHolder
from scrm.sop.schedules import run_schedules, run_silence_scan
from scrm.sop.services import SopServices
from scrm.sop.ticks import run_due, sweep_retired

log = logging.getLogger(__name__)

SILENCE_SCAN_SECONDS = 600.0


def sop_ticks(
    session_factory: SessionFactory, services: SopServices, corp_id: str, *, every: float = 5.0
) -> list[TickSpec]:
    """Due steps and schedule fires every ``every`` seconds; the silence scan every ten minutes."""

    async def due_steps(now: datetime) -> None:
        ended = await sweep_retired(session_factory, services, now)
        started = await run_schedules(session_factory, services, corp_id, now)
        advanced = await run_due(session_factory, services, now)
        if ended or started or advanced:
            log.info("SOP tick", extra={"ended": ended, "enrolled": started, "advanced": advanced})

    async def silence(now: datetime) -> None:
        started = await run_silence_scan(session_factory, services, corp_id, now)
        if started:
            log.info("silent contacts enrolled", extra={"count": started})

    return [TickSpec("sop_due_steps", every, due_steps), TickSpec("sop_silence", SILENCE_SCAN_SECONDS, silence)]


async def load_templates(holder: CatalogHolder) -> None:
    """The first load of the SOP folder, in a worker thread; from now on only :func:`reload_templates` reloads."""
    holder.watch_in_background()
    await holder.refresh()


async def reload_templates(holder: CatalogHolder, stop: asyncio.Event) -> None:
    """Look at the SOP folder every ``holder.check_every`` seconds until ``stop``; a changed folder is loaded and
    checked in a worker thread (:meth:`CatalogHolder.refresh`), while the loop keeps serving callbacks."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=holder.check_every)
        if stop.is_set():
            return
        try:
            await holder.refresh()
        except Exception:  # a reload that fails unexpectedly keeps the last good templates, and the watch
            log.exception("SOP folder reload failed; keeping the last good templates")
