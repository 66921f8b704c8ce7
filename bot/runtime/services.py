"""The domain services of a process, built from its settings (see :class:`scrm.services.Services`)."""

from __future__ import annotations

from bot.settings import Settings
from bot.web.links import link_signer
from scrm.services import Services


def build_services(settings: Settings) -> Services:
    """The domain services of a process on ``settings`` (one SOP folder, one corp)."""
    console = settings.public_url.rstrip("/") + "/" if settings.public_url else "https://work.weixin.qq.com/"
    return Services.build(settings.sop_dir, links=link_signer(settings), console_url=console)
