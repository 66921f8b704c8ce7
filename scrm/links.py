"""Tracked links: a link attachment's url goes out as ``{base}/l/{token}`` so a click counts as activity.

The token carries the original url and who it was sent to, signed with HMAC-SHA256 (truncated to 16
bytes): ``b64url(json {u, c, e, s}) + "." + b64url(mac)``, base64 without padding. Nothing is stored
when a link is wrapped; the click handler (``bot.web.links``) verifies the token, records the click
with :func:`record_click` and redirects. ``contact.silent`` counts from ``Contact.last_active_at``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy import or_, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.errors import LianyiError
from scrm.models import Contact


class LinkWrapper(Protocol):
    """What :class:`LinkSigner` offers whoever renders messages (SOP steps, campaigns)."""

    def wrap(self, url: str, *, corp_id: str, external_userid: str, source: str) -> str: ...


log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 2048
MAC_BYTES = 16
TRACKED_SCHEMES = frozenset({"http", "https"})


class LinkError(LianyiError):
    """A tracked-link token that cannot be trusted; ``reason`` says why (for logs, never for customers)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TrackedLink:
    url: str
    corp_id: str
    external_userid: str
    source: str  # what sent the link, e.g. "sop:nurture_week1:3" or "campaign:c42"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _trackable(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in TRACKED_SCHEMES and bool(parts.netloc)


class LinkSigner:
    """Wraps urls into signed tracked links under ``base`` (the public base URL) and unwraps tokens."""

    def __init__(self, secret: bytes, base: str) -> None:
        if not secret:
            raise ValueError("the tracked-link secret must not be empty")
        self._secret = secret
        self.base = base.rstrip("/")

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]

    def token(self, url: str, *, corp_id: str, external_userid: str, source: str) -> str:
        body = {"u": url, "c": corp_id, "e": external_userid, "s": source}
        payload = _b64encode(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return f"{payload}.{_b64encode(self._mac(payload))}"

    def wrap(self, url: str, *, corp_id: str, external_userid: str, source: str) -> str:
        """The tracked link for ``url``; non-http(s) urls (and urls too long to track) come back unchanged."""
        if not _trackable(url):
            return url
        token = self.token(url, corp_id=corp_id, external_userid=external_userid, source=source)
        if len(token) > MAX_TOKEN_CHARS:
            log.warning("url too long to track, sent as is", extra={"url_chars": len(url), "source": source})
            return url
        return f"{self.base}/l/{token}"

    def unwrap(self, token: str) -> TrackedLink:
        """Verify ``token`` and return what it carries; raises :class:`LinkError`."""
        if len(token) > MAX_TOKEN_CHARS:
            raise LinkError("token too long")
        payload, dot, signature = token.partition(".")
        if not dot or not payload or not signature:
            raise LinkError("malformed token")
        try:
            mac = _b64decode(signature)
        except (binascii.Error, ValueError):
            raise LinkError("malformed signature") from None
        if len(mac) != MAC_BYTES:
            raise LinkError("malformed signature")
        if not hmac.compare_digest(mac, self._mac(payload) if payload.isascii() else b""):
            raise LinkError("bad signature")
        try:
            body = json.loads(_b64decode(payload))
            link = TrackedLink(url=body["u"], corp_id=body["c"], external_userid=body["e"], source=body["s"])
        except (binascii.Error, ValueError, TypeError, KeyError):
            raise LinkError("malformed payload") from None
        if not all(isinstance(v, str) for v in (link.url, link.corp_id, link.external_userid, link.source)):
            raise LinkError("malformed payload")
        if not _trackable(link.url):
            raise LinkError("not an http(s) url")
        return link


async def record_click(session: AsyncSession, link: TrackedLink, at: datetime) -> None:
    """Count a click as the contact's activity (``last_active_at`` never moves back) and audit it."""
    await session.exec(
        update(Contact)
        .where(
            col(Contact.corp_id) == link.corp_id,
            col(Contact.external_userid) == link.external_userid,
            or_(col(Contact.last_active_at).is_(None), col(Contact.last_active_at) < at),
        )
        .values(last_active_at=at)
    )
    await audit.record(
        session,
        link.corp_id,
        "link.clicked",
        "contact",
        link.external_userid,
        {"url": link.url, "source": link.source, "at": at.isoformat()},
        actor="customer",
    )
