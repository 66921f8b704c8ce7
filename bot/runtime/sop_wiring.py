"""The SOP engine's leader-only ticks inside a Lianyi process: due steps, schedules, the silence scan."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.runtime.scheduler import TickSpec
from scrm.db import SessionFactory
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
