"""Tracked links: a link attachment's url goes out as ``{base}/l/{token}`` so a click counts as activity.

The token carries the original url, the corp and who it was sent to, signed with HMAC-SHA256 (truncated to
16 bytes): ``b64url(json {u, c, e, s}) + "." + b64url(mac)``, base64 without padding. Nothing is stored when a
link is wrapped; the click handler (``bot.web.links``) verifies the token and its corp, records the click with
:func:`record_click` and redirects. ``contact.silent`` counts from ``Contact.last_active_at``.

Every click is kept (activity and a ``link.clicked`` audit row, which reports count), but for the score a
contact's clicks of one link count once per :data:`CLICK_WINDOW`: a click is counted when the contact's last
counted click of that link is at least ``CLICK_WINDOW`` older, and its ``click`` intent signal gets the ref
``click:<contact+link digest>:<time of this click>``. The decision reads the last counted click in the click's
own transaction, serialised per contact and link (a transaction-scoped advisory lock on PostgreSQL; on SQLite
the click's first write already holds the database's one write lock), so racing clicks in any number of
processes count once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.errors import LianyiError
from scrm.models import Contact, IntentSignal
from scrm.privacy.tombstones import erased_at


class LinkWrapper(Protocol):
    """What :class:`LinkSigner` offers whoever renders messages (SOP steps, campaigns)."""

    def wrap(self, url: str, *, corp_id: str, external_userid: str, source: str) -> str: ...


log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 2048
MAC_BYTES = 16
TRACKED_SCHEMES = frozenset({"http", "https"})
CLICK_WINDOW = timedelta(minutes=10)  # repeated clicks of one link by one contact within it count once


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
    """Wraps urls into signed tracked links under ``base`` (the public base URL) and unwraps tokens.

    ``secret`` signs; ``previous`` keys (a secret key rotation) still verify links sent before it."""

    def __init__(self, secret: bytes, base: str, *, previous: Sequence[bytes] = ()) -> None:
        if not secret or not all(previous):
            raise ValueError("the tracked-link secret must not be empty")
        self._secret = secret
        self._verifying = (secret, *previous)
        self.base = base.rstrip("/")

    def _mac(self, payload: str, secret: bytes | None = None) -> bytes:
        key = self._secret if secret is None else secret
        return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]

    def _signed_by_us(self, payload: str, mac: bytes) -> bool:
        if not payload.isascii():
            return False
        return any([hmac.compare_digest(mac, self._mac(payload, key)) for key in self._verifying])

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
        if not self._signed_by_us(payload, mac):
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


async def record_click(session: AsyncSession, link: TrackedLink, at: datetime) -> str | None:
    """Count a click as the contact's activity (``last_active_at`` never moves back) and audit it; every click is
    recorded. Returns the ref of the ``click`` intent signal this click is worth, or None when it is not counted
    for the score (no contact in the token, or this contact's last counted click of this link is less than
    :data:`CLICK_WINDOW` before ``at``; see the module docstring). A link of an erased customer who has not come
    back (no contact row) records nothing."""
    if link.external_userid and await _erased_and_gone(session, link):
        return None
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
    if not link.external_userid:
        return None
    return await _counted_click_ref(session, link, at)


async def _erased_and_gone(session: AsyncSession, link: TrackedLink) -> bool:
    if await erased_at(session, link.corp_id, link.external_userid) is None:
        return False
    stmt = select(Contact.id).where(Contact.corp_id == link.corp_id, Contact.external_userid == link.external_userid)
    return (await session.exec(stmt)).first() is None


async def _counted_click_ref(session: AsyncSession, link: TrackedLink, at: datetime) -> str | None:
    """The signal ref of a click to count, or None; the caller has already written in this transaction."""
    digest = hashlib.sha256(f"{link.external_userid}\0{link.source}\0{link.url}".encode()).digest()
    if session.get_bind().dialect.name == "postgresql":  # one decision at a time per contact and link
        await session.exec(select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))
    prefix = f"click:{digest.hex()[:16]}:"
    last = (
        await session.exec(
            select(func.max(IntentSignal.at)).where(
                IntentSignal.corp_id == link.corp_id,
                IntentSignal.external_userid == link.external_userid,
                IntentSignal.kind == "click",
                col(IntentSignal.ref).startswith(prefix),
            )
        )
    ).one()
    if last is not None and at < last + CLICK_WINDOW:
        return None
    return f"{prefix}{at.astimezone(UTC):%Y%m%dT%H%M%S.%f}"
