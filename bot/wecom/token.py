"""The access-token cache: one token per app secret, refreshed by exactly one caller at a time.

Two backends behind :class:`TokenCache`: in-process (one asyncio lock) and Redis (a lock key with a TTL so
that several processes share one token and a crashed refresher cannot wedge the others). Waiters re-read
the cache once the refresher is done instead of refreshing again. Tokens are treated as expired
``margin`` seconds early because WeCom may invalidate them before ``expires_in``.

The cache key is per corp and per *fingerprint* of the secret (never the secret itself), so two apps of
one corp never share a token. ``invalidate(stale)`` drops the cached token only if it is still the stale
one, so fifty callers that all saw 40014 with the same token cause one refresh, not fifty.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from bot.redis_keys import RedisKeys

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class FetchedToken:
    access_token: str
    expires_in: int  # seconds, as returned by gettoken


TokenFetcher = Callable[[], Awaitable[FetchedToken]]

DEFAULT_MARGIN = 300.0  # refresh five minutes before WeCom says the token expires


def secret_fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a secret (for cache keys and logs)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


def usable_seconds(expires_in: int, margin: float) -> float:
    """How long we use a token: its lifetime minus the margin (at most half of a short lifetime)."""
    return max(0.0, expires_in - min(margin, expires_in / 2))


class TokenCache(Protocol):
    async def get(self, fetch: TokenFetcher) -> str:
        """The cached token, or a fresh one from ``fetch`` (only one refresh runs at a time)."""
        ...

    async def invalidate(self, stale: str | None = None) -> None:
        """Forget the cached token (only if it is still ``stale`` when given)."""
        ...


class InProcessTokenCache:
    """A token shared by the tasks of one process."""

    def __init__(self, *, clock: Clock = time.time, margin: float = DEFAULT_MARGIN) -> None:
        self._clock = clock
        self._margin = margin
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._valid_until = 0.0

    def _current(self) -> str | None:
        if self._token is not None and self._clock() < self._valid_until:
            return self._token
        return None

    async def get(self, fetch: TokenFetcher) -> str:
        token = self._current()
        if token is not None:
            return token
        async with self._lock:
            token = self._current()  # the previous holder may just have refreshed it
            if token is not None:
                return token
            fetched = await fetch()
            self._token = fetched.access_token
            self._valid_until = self._clock() + usable_seconds(fetched.expires_in, self._margin)
            return fetched.access_token

    async def invalidate(self, stale: str | None = None) -> None:
        if stale is None or stale == self._token:
            self._token = None
            self._valid_until = 0.0


# Delete KEYS[1] only if it still holds the token ARGV[1] (the value is JSON {"access_token", ...}).
_INVALIDATE_IF_STALE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, value = pcall(cjson.decode, raw)
if (not ok) or value['access_token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Release the refresh lock only if we still own it.
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTokenCache:
    """A token shared by every process of a deployment.

    The value is JSON ``{"access_token", "valid_until"}`` (epoch seconds from ``clock``, so expiry follows
    an injected clock in tests) with a Redis TTL as garbage collection. One coroutine per process talks to
    the lock; a process that finds another one refreshing re-reads the cache every ``poll`` seconds until
    the token appears or the lock's TTL frees a crashed refresher's lock.
    """

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        corp_id: str,
        secret: str,
        clock: Clock = time.time,
        margin: float = DEFAULT_MARGIN,
        lock_ttl: float = 15.0,
        poll: float = 0.05,
    ) -> None:
        fingerprint = secret_fingerprint(secret)
        self._redis = redis
        self._key = keys.access_token(corp_id, fingerprint)
        self._lock_key = keys.access_token_lock(corp_id, fingerprint)
        self._clock = clock
        self._margin = margin
        self._lock_ttl_ms = int(lock_ttl * 1000)
        self._poll = poll
        self._local_lock = asyncio.Lock()
        self._owner = uuid.uuid4().hex
        self._invalidate_if_stale = redis.register_script(_INVALIDATE_IF_STALE)
        self._release_lock = redis.register_script(_RELEASE_LOCK)

    async def _current(self) -> str | None:
        raw = await self._redis.get(self._key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            token = str(value["access_token"])
            valid_until = float(value["valid_until"])
        except (ValueError, KeyError, TypeError):
            log.warning("token cache entry unreadable; refreshing", extra={"key": self._key})
            return None
        return token if self._clock() < valid_until else None

    async def _store(self, fetched: FetchedToken) -> None:
        usable = usable_seconds(fetched.expires_in, self._margin)
        value = json.dumps({"access_token": fetched.access_token, "valid_until": self._clock() + usable})
        # The TTL only collects garbage; validity is judged by valid_until.
        await self._redis.set(self._key, value, px=max(1000, int(fetched.expires_in * 1000)))

    async def get(self, fetch: TokenFetcher) -> str:
        token = await self._current()
        if token is not None:
            return token
        async with self._local_lock:
            while True:
                token = await self._current()
                if token is not None:
                    return token
                if await self._redis.set(self._lock_key, self._owner, nx=True, px=self._lock_ttl_ms):
                    try:
                        token = await self._current()
                        if token is not None:
                            return token
                        fetched = await fetch()
                        await self._store(fetched)
                        return fetched.access_token
                    finally:
                        await self._release_lock(keys=[self._lock_key], args=[self._owner])
                # Another process is refreshing: wait for its token (or for its lock to lapse).
                await asyncio.sleep(self._poll)

    async def invalidate(self, stale: str | None = None) -> None:
        if stale is None:
            await self._redis.delete(self._key)
        else:
            await self._invalidate_if_stale(keys=[self._key], args=[stale])
