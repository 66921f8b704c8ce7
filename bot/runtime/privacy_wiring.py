"""The leader's retention tick: message text older than ``LIANYI_MESSAGE_RETENTION_DAYS``, and every message
text of customers lost ``LIANYI_LOST_CUSTOMER_RETENTION_DAYS`` ago, is blanked (see scrm.privacy.retention)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot.runtime.scheduler import TickSpec
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.privacy.retention import purge_lost_customers, purge_old_messages

log = logging.getLogger(__name__)

RETENTION_TICK_SECONDS = 3600.0


def retention_ticks(session_factory: SessionFactory, settings: Settings) -> list[TickSpec]:
    """The hourly retention purge; none when both settings are 0 (keep forever)."""
    corp_id = settings.corp_id
    message_days, lost_days = settings.message_retention_days, settings.lost_customer_retention_days
    if not message_days and not lost_days:
        return []

    async def purge(now: datetime) -> None:
        old = lost = 0
        if message_days:
            old = await purge_old_messages(session_factory, corp_id, sent_before=now - timedelta(days=message_days))
        if lost_days:
            cutoff = now - timedelta(days=lost_days)
            lost = await purge_lost_customers(session_factory, corp_id, deleted_before=cutoff)
        if old or lost:
            log.info("message text purged by retention", extra={"old_messages": old, "lost_customer_messages": lost})

    return [TickSpec("privacy_retention", RETENTION_TICK_SECONDS, purge)]
