"""Bearer tokens for staff on the lead API, each with an id in ``api_tokens`` so it can be revoked.

A token reads ``lt1.<token id>.<expiry>.<signature>``: the expiry in Unix seconds and the signature HMAC-SHA256
over the corp, the token id and the expiry (base64url, no padding), compared in constant time. The key is the
staff-token key derived from ``LIANYI_SECRET_KEY`` (:mod:`scrm.keys`); during a rotation the previous key still
verifies. A token lives at most :data:`MAX_LIFETIME`: a longer one is refused when issued and when presented.
Who it belongs to is read from its row, which also says whether it was revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.errors import DomainError
from scrm.models import ApiToken

VERSION = "lt1"
MAX_LIFETIME = timedelta(days=30)
MAX_TOKEN_CHARS = 256
TOKEN_ID_BYTES = 12


class TokenRefused(DomainError):
    """A token that cannot be issued (message in Chinese)."""

    def __init__(self, message_zh: str) -> None:
        super().__init__(message_zh)
        self.message_zh = message_zh


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once; never stored
    token_id: str
    expires_at: datetime


def _signature(key: bytes, corp_id: str, token_id: str, expiry: int) -> str:
    message = f"{VERSION}\0{corp_id}\0{token_id}\0{expiry}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def issue_token(
    session: AsyncSession,
    key: bytes,
    corp_id: str,
    staff_userid: str,
    *,
    lifetime: timedelta,
    created_by: str,
    now: datetime,
) -> IssuedToken:
    """A new token for ``staff_userid`` valid for ``lifetime`` (at most :data:`MAX_LIFETIME`), its row added to
    ``session``. The caller checks that the staff member exists and is active."""
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        raise TokenRefused(f"令牌有效期须在 1 秒到 {MAX_LIFETIME.days} 天之间")
    token_id = secrets.token_hex(TOKEN_ID_BYTES)
    expiry = int((now + lifetime).timestamp())
    expires_at = datetime.fromtimestamp(expiry, UTC)
    session.add(
        ApiToken(
            id=token_id,
            corp_id=corp_id,
            staff_userid=staff_userid,
            created_by=created_by,
            created_at=now,
            expires_at=expires_at,
        )
    )
    token = f"{VERSION}.{token_id}.{expiry}.{_signature(key, corp_id, token_id, expiry)}"
    return IssuedToken(token=token, token_id=token_id, expires_at=expires_at)


def read_token(keys: Iterable[bytes], corp_id: str, token: str, now: datetime) -> tuple[str, int] | None:
    """``(token id, expiry)`` of a well-formed token signed by one of ``keys`` for ``corp_id`` that has not expired
    and does not outlive :data:`MAX_LIFETIME` from ``now``; None otherwise. The row is not read here."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        return None
    _, token_id, expiry_text, offered = parts
    if not token_id or not expiry_text.isdigit() or len(expiry_text) > 12:
        return None
    expiry = int(expiry_text)
    signed = [hmac.compare_digest(offered, _signature(key, corp_id, token_id, expiry)) for key in keys]
    if not any(signed):
        return None
    if not now.timestamp() < expiry <= (now + MAX_LIFETIME).timestamp():
        return None
    return token_id, expiry


async def verify_token(
    session: AsyncSession, keys: Iterable[bytes], corp_id: str, token: str, now: datetime
) -> ApiToken | None:
    """The row of a valid token (see :func:`read_token`) that exists and was not revoked; None otherwise."""
    read = read_token(keys, corp_id, token, now)
    if read is None:
        return None
    token_id, expiry = read
    row = await session.get(ApiToken, token_id)
    if row is None or row.corp_id != corp_id or row.revoked_at is not None:
        return None
    if int(row.expires_at.timestamp()) != expiry:
        return None
    return row


async def revoke_token(session: AsyncSession, token_id: str, now: datetime) -> ApiToken | None:
    """Revoke one token by id (already revoked: unchanged); None when there is no such token."""
    row = await session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
    return row


async def revoke_staff_tokens(session: AsyncSession, corp_id: str, staff_userid: str, now: datetime) -> int:
    """Revoke every live token of one staff member; how many were revoked."""
    result = await session.exec(
        update(ApiToken)
        .where(
            col(ApiToken.corp_id) == corp_id,
            col(ApiToken.staff_userid) == staff_userid,
            col(ApiToken.revoked_at).is_(None),
            col(ApiToken.expires_at) > now,
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount or 0)


async def tokens_of(session: AsyncSession, corp_id: str, staff_userid: str) -> list[ApiToken]:
    statement = select(ApiToken).where(ApiToken.corp_id == corp_id, ApiToken.staff_userid == staff_userid)
    return list((await session.exec(statement.order_by(col(ApiToken.created_at)))).all())
