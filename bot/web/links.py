"""GET /l/{token} (and /r/{token}): count a tracked-link click, then send the customer on to the original url.

A click is also an intent signal (``click``) for the contact's lead score when the services are given, once per
contact and link within ``scrm.links.CLICK_WINDOW`` (every click is still recorded for reports). A token signed
for another corp than this deployment's gets the same 404 page as a forged one and records nothing.
A valid token always redirects, even when the click cannot be recorded (the customer must reach the
page; the failure is logged). HEAD requests (link previews, crawlers) redirect without counting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from bot.settings import ContentSettings, key_ring
from scrm.db import SessionFactory, write_transaction
from scrm.intent.pipeline import on_behaviour
from scrm.keys import KeyPurpose
from scrm.links import LinkError, LinkSigner, record_click
from scrm.services import Services

log = logging.getLogger(__name__)

INVALID_LINK_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>链接无效</title></head>
<body style="font-family: sans-serif; text-align: center; padding-top: 20vh; color: #555">
<p>链接无效或已过期</p></body></html>
"""


def add_link_routes(
    app: web.Application,
    signer: LinkSigner,
    session_factory: SessionFactory,
    now: Callable[[], datetime],
    *,
    corp_id: str,
    services: Services | None = None,
) -> None:
    """Register ``GET /l/{token}`` on ``app`` for links of ``corp_id``; ``now`` is the clock clicks are stamped
    with. With ``services`` a counted click is also an intent signal for the contact's score."""

    async def follow_link(request: web.Request) -> web.StreamResponse:
        try:
            link = signer.unwrap(request.match_info["token"])
            if link.corp_id != corp_id:
                raise LinkError("another corp's link")
        except LinkError as exc:
            log.info("invalid tracked link", extra={"reason": exc.reason})
            return web.Response(status=404, text=INVALID_LINK_PAGE, content_type="text/html", charset="utf-8")
        if request.method == "GET":
            try:
                at = now()
                async with write_transaction(session_factory) as session:
                    ref = await record_click(session, link, at)
                    if services is not None and ref is not None:
                        await on_behaviour(
                            session,
                            link.corp_id,
                            link.external_userid,
                            kind="click",
                            ref=ref,
                            at=at,
                            detail={"url": link.url, "source": link.source},
                            intent=services.intent,
                            hooks=services,
                        )
            except Exception:
                log.exception("could not record a tracked-link click", extra={"source": link.source})
        raise web.HTTPFound(location=link.url)

    app.router.add_get("/l/{token}", follow_link)
    app.router.add_get("/r/{token}", follow_link)  # the same links under the name campaigns print


def link_signer(settings: ContentSettings) -> LinkSigner | None:
    """The tracked-link signer (its keys derived from LIANYI_SECRET_KEY, the previous key verifying), or None when
    no public URL is configured (links are then sent as written)."""
    if not settings.public_url:
        return None
    current, *previous = key_ring(settings).keys(KeyPurpose.TRACKED_LINKS)
    return LinkSigner(current, settings.public_url, previous=previous)
