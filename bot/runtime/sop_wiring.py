"""The SOP engine inside a Lianyi process: its services (catalog, tracked links) and its leader-only ticks."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from bot.runtime.scheduler import TickSpec
from bot.settings import ContentSettings, Settings
from scrm.db import SessionFactory
from scrm.links import LinkSigner
from scrm.sop.catalog import catalog_for
from scrm.sop.engine import SopServices
from scrm.sop.schedules import run_schedules, run_silence_scan
from scrm.sop.ticks import run_due, sweep_retired

log = logging.getLogger(__name__)

SILENCE_SCAN_SECONDS = 600.0


def link_secret(settings: ContentSettings) -> bytes:
    """LIANYI_LINK_SECRET, or a key derived from the callback AES key (the same in every process)."""
    if settings.link_secret:
        return settings.link_secret.encode("utf-8")
    return hashlib.sha256(b"lianyi tracked links\0" + settings.callback_aes_key.encode("ascii")).digest()


def link_signer(settings: ContentSettings) -> LinkSigner | None:
    """The tracked-link signer, or None when no public URL is configured (links are then sent as written)."""
    return LinkSigner(link_secret(settings), settings.public_url) if settings.public_url else None


def sop_services(settings: Settings) -> SopServices:
    links = link_signer(settings)
    console = settings.public_url.rstrip("/") + "/" if settings.public_url else "https://work.weixin.qq.com/"
    return SopServices(holder=catalog_for(settings.sop_dir), links=links, console_url=console)


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
