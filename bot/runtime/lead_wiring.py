"""Lead handoff inside a Lianyi process: its services and its leader-only ticks (SLA checks and waiting
leads; staff notification flush)."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.runtime.scheduler import TickSpec
from scrm.db import SessionFactory
from scrm.leads.escalation import run_sla_checks
from scrm.leads.notify import flush_notifications
from scrm.leads.services import LeadServices

log = logging.getLogger(__name__)

NOTIFY_FLUSH_SECONDS = 2.0  # advisors hear of a new lead within a couple of seconds


def lead_ticks(
    session_factory: SessionFactory, services: LeadServices, corp_id: str, *, every: float = 5.0
) -> list[TickSpec]:
    """SLA checks every ``every`` seconds; the notification flush every two seconds."""

    async def sla(now: datetime) -> None:
        await run_sla_checks(session_factory, services, now)

    async def notifications(now: datetime) -> None:
        rules = services.rules()
        await flush_notifications(session_factory, corp_id, rules.notify, now=now, digest_url=services.lead_url(None))

    return [
        TickSpec("lead_sla", every, sla),
        TickSpec("lead_notifications", min(every, NOTIFY_FLUSH_SECONDS), notifications),
    ]
