"""Console sessions and sign-in throttling in Redis (when ``LIANYI_REDIS_URL`` is set): the same protocols as the
SQL stores of :mod:`scrm.accounts.sessions` and :mod:`scrm.accounts.throttle`, keys named in ``bot.redis_keys``.

A session is a hash that expires with the session; a user's set of session digests lets one sign-out end them
all. A revoked session is deleted. Failed sign-ins are a sorted set per username or address digest, scored by
time, trimmed to the window on every write.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from bot.redis_keys import RedisKeys
from scrm.accounts.sessions import TOUCH_EVERY, SessionInfo, new_session, session_digest
from scrm.accounts.throttle import LIMITS, WINDOW, ThrottleScope, throttle_digest


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisSessionStore:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def create(
        self, user_id: int, *, now: datetime, lifetime: timedelta, user_agent: str, client_digest: str
    ) -> tuple[str, SessionInfo]:
        session_id, info = new_session(
            user_id, now=now, lifetime=lifetime, user_agent=user_agent, client_digest=client_digest
        )
        key, user_key = self._keys.console_session(info.id_digest), self._keys.user_sessions(user_id)
        expire_ms = int(info.expires_at.timestamp() * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "user_id": str(user_id),
                    "created_at": now.isoformat(),
                    "expires_at": info.expires_at.isoformat(),
                    "last_seen_at": now.isoformat(),
                    "user_agent": info.user_agent,
                    "client_digest": client_digest,
                },
            )
            pipe.pexpireat(key, expire_ms)
            pipe.zadd(user_key, {info.id_digest: info.expires_at.timestamp()})
            pipe.pexpireat(user_key, expire_ms, gt=True)
            pipe.pexpireat(user_key, expire_ms, nx=True)
            await pipe.execute()
        return session_id, info

    async def _load(self, digest: str, now: datetime) -> SessionInfo | None:
        raw = await self._redis.hgetall(self._keys.console_session(digest))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        info = SessionInfo(
            id_digest=digest,
            user_id=int(fields["user_id"]),
            created_at=_at(fields["created_at"]),
            expires_at=_at(fields["expires_at"]),
            last_seen_at=_at(fields["last_seen_at"]),
            user_agent=fields.get("user_agent", ""),
            client_digest=fields.get("client_digest", ""),
        )
        return info if info.expires_at > now else None

    async def get(self, session_id: str, now: datetime) -> SessionInfo | None:
        digest = session_digest(session_id)
        info = await self._load(digest, now)
        if info is not None and now - info.last_seen_at >= TOUCH_EVERY:
            await self._redis.hset(self._keys.console_session(digest), "last_seen_at", now.isoformat())
            info = replace(info, last_seen_at=now)
        return info

    async def revoke(self, session_id: str, now: datetime) -> None:
        digest = session_digest(session_id)
        info = await self._load(digest, now)
        await self._redis.delete(self._keys.console_session(digest))
        if info is not None:
            await self._redis.zrem(self._keys.user_sessions(info.user_id), digest)

    async def revoke_user(self, user_id: int, now: datetime) -> int:
        user_key = self._keys.user_sessions(user_id)
        digests = [_text(d) for d in await self._redis.zrangebyscore(user_key, now.timestamp(), "+inf")]
        revoked = await self._redis.delete(*[self._keys.console_session(d) for d in digests]) if digests else 0
        await self._redis.delete(user_key)
        return int(revoked)

    async def revoke_all(self, now: datetime) -> int:
        revoked = 0
        for pattern in (self._keys.console_sessions_pattern(), self._keys.user_sessions_pattern()):
            batch = [k async for k in self._redis.scan_iter(match=pattern, count=500)]
            for start in range(0, len(batch), 500):
                deleted = await self._redis.delete(*batch[start : start + 500])
                revoked += int(deleted) if pattern == self._keys.console_sessions_pattern() else 0
        return revoked

    async def of_user(self, user_id: int, now: datetime) -> list[SessionInfo]:
        user_key = self._keys.user_sessions(user_id)
        await self._redis.zremrangebyscore(user_key, "-inf", now.timestamp())
        found = [await self._load(_text(d), now) for d in await self._redis.zrange(user_key, 0, -1)]
        live = [info for info in found if info is not None]
        return sorted(live, key=lambda info: info.created_at, reverse=True)


class RedisLoginThrottle:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    def _key(self, scope: ThrottleScope, value: str) -> str:
        return self._keys.login_failures(scope.value, throttle_digest(scope, value))

    async def blocked(self, username: str, address: str, now: datetime) -> bool:
        since = (now - WINDOW).timestamp()
        for scope, value in ((ThrottleScope.USER, username), (ThrottleScope.ADDRESS, address)):
            if await self._redis.zcount(self._key(scope, value), f"({since}", "+inf") >= LIMITS[scope]:
                return True
        return False

    async def record_failure(self, username: str, address: str, now: datetime) -> None:
        member = uuid.uuid4().hex
        async with self._redis.pipeline(transaction=True) as pipe:
            for scope, value in ((ThrottleScope.USER, username), (ThrottleScope.ADDRESS, address)):
                key = self._key(scope, value)
                pipe.zremrangebyscore(key, "-inf", (now - WINDOW).timestamp())
                pipe.zadd(key, {member: now.timestamp()})
                pipe.expire(key, int(WINDOW.total_seconds()) + 60)
            await pipe.execute()

    async def clear_user(self, username: str) -> None:
        await self._redis.delete(self._key(ThrottleScope.USER, username))
