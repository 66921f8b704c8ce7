"""Leader election for the scheduler: only the leader ticks.

With Redis, the leader holds ``<prefix>:scheduler:leader`` (SET NX PX) and renews it every third of the TTL;
a renewal only succeeds while the key still holds our token (compare-and-extend in Lua), so a paused process
that lost the lock can never believe it still leads. Without Redis, the single process is the leader.
Ticks are idempotent anyway (deterministic work ids); the lock only avoids wasted work.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLock(Protocol):
    async def acquire_or_renew(self) -> bool: ...

    async def release(self) -> None: ...


class SingleProcessLeader:
    """In-process mode: there is only one process, so it leads."""

    async def acquire_or_renew(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class RedisLeader:
    def __init__(self, redis: aioredis.Redis, key: str, *, ttl_seconds: float = 15.0) -> None:
        self._redis = redis
        self._key = key
        self._ttl_ms = int(ttl_seconds * 1000)
        self._token = uuid.uuid4().hex
        self._leading = False

    async def acquire_or_renew(self) -> bool:
        if self._leading:
            extended = await self._redis.eval(_EXTEND, 1, self._key, self._token, str(self._ttl_ms))
            if extended:
                return True
            log.warning("scheduler leadership lost", extra={"key": self._key})
            self._leading = False
        acquired = await self._redis.set(self._key, self._token, nx=True, px=self._ttl_ms)
        if acquired:
            log.info("scheduler leadership acquired", extra={"key": self._key})
            self._leading = True
        return self._leading

    async def release(self) -> None:
        if self._leading:
            await self._redis.eval(_RELEASE, 1, self._key, self._token)
            self._leading = False
