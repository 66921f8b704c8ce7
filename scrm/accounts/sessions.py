"""Server-side console sessions: one protocol, a SQL store here and a Redis store in ``bot.web.session_redis``.

A session id is 32 random bytes (base64url) that only the browser holds; a store keeps its SHA-256 digest, so
whoever reads the table or Redis cannot sign in with what they read. A session lives until ``expires_at``
(sign-in plus ``LIANYI_SESSION_MAX_HOURS``) unless revoked: one at a time (sign out), every session of a user
(sign out everywhere, a disabled user) or all of them (``lianyi session revoke-all``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import update
from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.models import UserSession

TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often
USER_AGENT_CHARS = 128


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_session(
    user_id: int, *, now: datetime, lifetime: timedelta, user_agent: str, client_digest: str
) -> tuple[str, SessionInfo]:
    """A fresh session id and what a store keeps of it (every store makes its sessions here)."""
    session_id = new_session_id()
    info = SessionInfo(
        id_digest=session_digest(session_id),
        user_id=user_id,
        created_at=now,
        expires_at=now + lifetime,
        last_seen_at=now,
        user_agent=user_agent[:USER_AGENT_CHARS],
        client_digest=client_digest,
    )
    return session_id, info


@dataclass(frozen=True)
class SessionInfo:
    id_digest: str
    user_id: int
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    user_agent: str
    client_digest: str


class SessionStore(Protocol):
    async def create(
        self, user_id: int, *, now: datetime, lifetime: timedelta, user_agent: str, client_digest: str
    ) -> tuple[str, SessionInfo]:
        """A new session: ``(session id for the cookie, what is stored)``."""
        ...

    async def get(self, session_id: str, now: datetime) -> SessionInfo | None:
        """The live session (not expired, not revoked), its last_seen_at moved on; None otherwise."""
        ...

    async def revoke(self, session_id: str, now: datetime) -> None: ...

    async def revoke_user(self, user_id: int, now: datetime) -> int:
        """Revoke every live session of ``user_id``; how many."""
        ...

    async def revoke_all(self, now: datetime) -> int:
        """Revoke every live session; how many."""
        ...

    async def of_user(self, user_id: int, now: datetime) -> list[SessionInfo]:
        """The live sessions of ``user_id``, newest first."""
        ...


def _info(row: UserSession) -> SessionInfo:
    return SessionInfo(
        id_digest=row.id_digest,
        user_id=row.user_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_seen_at=row.last_seen_at,
        user_agent=row.user_agent,
        client_digest=row.client_digest,
    )


class SqlSessionStore:
    """Sessions in the ``user_sessions`` table (SQLite or PostgreSQL)."""

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory

    async def create(
        self, user_id: int, *, now: datetime, lifetime: timedelta, user_agent: str, client_digest: str
    ) -> tuple[str, SessionInfo]:
        session_id, info = new_session(
            user_id, now=now, lifetime=lifetime, user_agent=user_agent, client_digest=client_digest
        )
        async with write_transaction(self._factory) as session:
            session.add(UserSession(**asdict(info)))
        return session_id, info

    async def get(self, session_id: str, now: datetime) -> SessionInfo | None:
        digest = session_digest(session_id)
        async with self._factory() as session:
            row = await session.get(UserSession, digest)
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            async with write_transaction(self._factory) as session:
                await session.exec(
                    update(UserSession).where(col(UserSession.id_digest) == digest).values(last_seen_at=now)
                )
            row.last_seen_at = now
        return _info(row)

    async def revoke(self, session_id: str, now: datetime) -> None:
        await self._revoke(now, col(UserSession.id_digest) == session_digest(session_id))

    async def revoke_user(self, user_id: int, now: datetime) -> int:
        return await self._revoke(now, col(UserSession.user_id) == user_id)

    async def revoke_all(self, now: datetime) -> int:
        return await self._revoke(now)

    async def _revoke(self, now: datetime, *conditions: object) -> int:
        statement = (
            update(UserSession)
            .where(col(UserSession.revoked_at).is_(None), col(UserSession.expires_at) > now, *conditions)  # type: ignore[arg-type]
            .values(revoked_at=now)
        )
        async with write_transaction(self._factory) as session:
            result = await session.exec(statement)
        return int(result.rowcount or 0)

    async def of_user(self, user_id: int, now: datetime) -> list[SessionInfo]:
        statement = select(UserSession).where(
            UserSession.user_id == user_id, col(UserSession.revoked_at).is_(None), UserSession.expires_at > now
        )
        async with self._factory() as session:
            rows = (await session.exec(statement.order_by(col(UserSession.created_at).desc()))).all()
        return [_info(row) for row in rows]
