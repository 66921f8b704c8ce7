"""Console sign-in throttling: too many failures for one username, or from one client address, within
:data:`WINDOW` refuse further attempts until the oldest failure ages out. One protocol, a SQL store here (it
works across processes sharing the database) and a Redis store in ``bot.web.throttle_redis``.

Usernames and addresses are kept only as digests. A successful sign-in clears its username's failures (not the
address's: one address guessing many usernames stays throttled).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sqlalchemy import delete, func
from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.models import LoginFailure

WINDOW = timedelta(minutes=15)
USER_LIMIT = 5
ADDRESS_LIMIT = 20


class ThrottleScope(StrEnum):
    USER = "user"
    ADDRESS = "address"


LIMITS = {ThrottleScope.USER: USER_LIMIT, ThrottleScope.ADDRESS: ADDRESS_LIMIT}


def throttle_digest(scope: ThrottleScope, value: str) -> str:
    text = value.strip().lower() if scope == ThrottleScope.USER else value
    return hashlib.sha256(f"lianyi login {scope.value}\0{text}".encode()).hexdigest()


class LoginThrottle(Protocol):
    async def blocked(self, username: str, address: str, now: datetime) -> bool:
        """Whether the username or the address has used up its failures in the window."""
        ...

    async def record_failure(self, username: str, address: str, now: datetime) -> None: ...

    async def clear_user(self, username: str) -> None:
        """Forget the username's failures (after a successful sign-in)."""
        ...


class SqlLoginThrottle:
    """Failures as rows of ``login_failures``; rows older than the window are deleted as new ones come."""

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory

    async def blocked(self, username: str, address: str, now: datetime) -> bool:
        async with self._factory() as session:
            for scope, value in ((ThrottleScope.USER, username), (ThrottleScope.ADDRESS, address)):
                statement = select(func.count()).where(
                    LoginFailure.scope == scope.value,
                    LoginFailure.key_digest == throttle_digest(scope, value),
                    LoginFailure.at > now - WINDOW,
                )
                if (await session.exec(statement)).one() >= LIMITS[scope]:
                    return True
        return False

    async def record_failure(self, username: str, address: str, now: datetime) -> None:
        async with write_transaction(self._factory) as session:
            await session.exec(delete(LoginFailure).where(col(LoginFailure.at) <= now - WINDOW))
            for scope, value in ((ThrottleScope.USER, username), (ThrottleScope.ADDRESS, address)):
                session.add(LoginFailure(scope=scope.value, key_digest=throttle_digest(scope, value), at=now))

    async def clear_user(self, username: str) -> None:
        digest = throttle_digest(ThrottleScope.USER, username)
        async with write_transaction(self._factory) as session:
            await session.exec(
                delete(LoginFailure).where(
                    col(LoginFailure.scope) == ThrottleScope.USER.value, col(LoginFailure.key_digest) == digest
                )
            )
