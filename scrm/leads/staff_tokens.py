"""Bearer tokens for staff on the lead API: ``userid.expiry.signature`` with expiry in Unix seconds and the
signature HMAC-SHA256 over the corp, userid and expiry (base64url, no padding), compared in constant time.

The key is derived from a process-wide secret with its own label (:func:`derive_secret`), so a token can never
be mistaken for a tracked-link signature made from the same secret. The sidebar will obtain tokens by OAuth
later; ``lianyi staff token`` prints one today.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

LABEL = b"staff tokens"
MAX_TOKEN_CHARS = 512
MAX_USERID_CHARS = 64


def derive_secret(base: bytes) -> bytes:
    """The staff-token key for the process secret ``base``."""
    return hmac.new(base, LABEL, hashlib.sha256).digest()


def _signature(secret: bytes, corp_id: str, userid: str, expiry: int) -> str:
    message = f"{corp_id}\0{userid}\0{expiry}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue(secret: bytes, corp_id: str, userid: str, expires_at: datetime) -> str:
    """A token for ``userid`` of ``corp_id`` valid until ``expires_at`` (timezone-aware)."""
    if not userid or len(userid) > MAX_USERID_CHARS or any(c.isspace() for c in userid):
        raise ValueError(f"invalid userid {userid!r}")
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    expiry = int(expires_at.timestamp())
    return f"{userid}.{expiry}.{_signature(secret, corp_id, userid, expiry)}"


def verify(secret: bytes, corp_id: str, token: str, now: datetime) -> str | None:
    """The userid the token was issued to, or None when it is malformed, forged, for another corp or expired."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.rsplit(".", 2)
    if len(parts) != 3:
        return None
    userid, expiry_text, offered = parts
    if not userid or not expiry_text.isascii() or not expiry_text.isdigit():
        return None
    expiry = int(expiry_text)
    expected = _signature(secret, corp_id, userid, expiry)
    if not hmac.compare_digest(offered.encode("ascii", errors="replace"), expected.encode("ascii")):
        return None
    if now.timestamp() >= expiry:
        return None
    return userid
