"""Rate limits for WeCom calls: sliding windows, in-process or in Redis.

WeCom counts calls per API per minute and app messages per member per minute and hour, and it *silently
drops* app messages over the member limit. A token bucket or GCRA lets up to twice the limit through in
some window of one period, so we use an exact sliding-window log: a call is allowed only if fewer than
``limit`` calls happened in the last ``period`` seconds. Several rates can be taken atomically (a member's
minute and hour windows; every recipient of one message), so a refused call consumes nothing.

After a 45009 the client calls :meth:`RateLimiter.block` so every process stops calling that API until the
block ends (Redis key ``api_blocked_until``). Times come from an injectable clock and waits go through an
injectable ``sleep``, so tests can jump over a 60 s block without sleeping.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from bot.redis_keys import RedisKeys
from bot.wecom.errors import LimiterRefused

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` acquisitions of ``bucket`` in any ``period`` seconds."""

    bucket: str
    limit: int
    period: float


class RateLimiter(Protocol):
    async def try_acquire_many(self, rates: Sequence[Rate]) -> float:
        """Take one slot of every rate atomically and return 0.0, or take nothing and return the wait."""
        ...

    async def try_acquire(self, bucket: str, limit: int, period: float) -> float:
        """Take one slot and return 0.0, or return the seconds to wait before one frees up."""
        ...

    async def acquire_many(
        self, rates: Sequence[Rate], *, api: str | None = None, max_wait: float | None = None
    ) -> None:
        """Wait until ``api`` is unblocked and every rate allows a call, then take the slots.

        Raises :class:`~bot.wecom.errors.LimiterRefused` (with ``retry_after``) instead of waiting beyond
        ``max_wait``; nothing was sent then.
        """
        ...

    async def acquire(self, bucket: str, limit: int, period: float) -> None:
        """Wait until the bucket allows a call, then take the slot."""
        ...

    async def block(self, api: str, seconds: float) -> None:
        """Nobody calls ``api`` for ``seconds`` (extends, never shortens, a block)."""
        ...

    async def blocked_for(self, api: str) -> float:
        """Seconds until ``api`` may be called again (0.0 when it is not blocked)."""
        ...


class _Waiting(ABC):
    """The waiting logic both backends share; they supply the atomic primitives."""

    _clock: Clock
    _sleep: Sleep

    @abstractmethod
    async def try_acquire_many(self, rates: Sequence[Rate]) -> float:
        """Take one slot of every rate at once, or none: 0.0 when taken, else the seconds to wait."""

    @abstractmethod
    async def blocked_for(self, api: str) -> float:
        """Seconds ``api`` stays blocked after a 45009 (0.0 when it is not)."""

    async def try_acquire(self, bucket: str, limit: int, period: float) -> float:
        return await self.try_acquire_many([Rate(bucket, limit, period)])

    async def acquire_many(
        self, rates: Sequence[Rate], *, api: str | None = None, max_wait: float | None = None
    ) -> None:
        give_up_at = None if max_wait is None else self._clock() + max_wait
        while True:
            blocked = await self.blocked_for(api) if api is not None else 0.0
            wait = blocked if blocked > 0 else await self.try_acquire_many(rates)
            if wait <= 0:
                return
            if give_up_at is not None and self._clock() + wait > give_up_at:
                name = api if blocked > 0 and api is not None else ",".join(r.bucket for r in rates)
                reason = "blocked after 45009" if blocked > 0 else "local rate limit"
                raise LimiterRefused(None, f"{reason}: next slot in {wait:.1f}s", name, retry_after=wait)
            await self._sleep(wait)

    async def acquire(self, bucket: str, limit: int, period: float) -> None:
        await self.acquire_many([Rate(bucket, limit, period)])


class InProcessRateLimiter(_Waiting):
    """Sliding windows in memory, for a single process."""

    def __init__(self, *, clock: Clock = time.time, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._windows: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def _wait_for(self, rate: Rate, now: float) -> float:
        window = self._windows.setdefault(rate.bucket, deque())
        while window and window[0] <= now - rate.period:
            window.popleft()
        if len(window) < rate.limit:
            return 0.0
        # The call that must leave the window before one more fits.
        return window[len(window) - rate.limit] + rate.period - now

    async def try_acquire_many(self, rates: Sequence[Rate]) -> float:
        now = self._clock()
        wait = max((self._wait_for(rate, now) for rate in rates), default=0.0)
        if wait > 0:
            return wait
        for rate in rates:
            self._windows[rate.bucket].append(now)
        return 0.0

    async def block(self, api: str, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._blocked_until.get(api, 0.0):
            self._blocked_until[api] = until

    async def blocked_for(self, api: str) -> float:
        return max(0.0, self._blocked_until.get(api, 0.0) - self._clock())


# KEYS = window keys; ARGV = now, member, then limit and period per key. Returns the wait as a string
# ("0" = taken). Scores are epoch seconds from the caller's clock.
_SLIDING_WINDOW = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local period = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local edge = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local w = tonumber(edge[2]) + period - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local period = tonumber(ARGV[2 + 2 * i])
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(period * 1000) + 1000)
end
return '0'
"""

# KEYS[1] = blocked-until key; ARGV = until (epoch seconds), ttl in ms. Only ever extends the block.
_BLOCK = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class RedisRateLimiter(_Waiting):
    """Sliding windows in Redis sorted sets, shared by every process (one Lua script per acquisition)."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, clock: Clock = time.time, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._sleep = sleep
        self._sliding_window = redis.register_script(_SLIDING_WINDOW)
        self._block = redis.register_script(_BLOCK)

    async def try_acquire_many(self, rates: Sequence[Rate]) -> float:
        if not rates:
            return 0.0
        args: list[str | float | int] = [repr(self._clock()), uuid.uuid4().hex]
        for rate in rates:
            args.extend([rate.limit, repr(float(rate.period))])
        keys = [self._keys.rate_limit(rate.bucket) for rate in rates]
        result = await self._sliding_window(keys=keys, args=args)
        return max(0.0, float(result))

    async def block(self, api: str, seconds: float) -> None:
        until = self._clock() + seconds
        ttl_ms = max(1, int(seconds * 1000) + 1000)
        await self._block(keys=[self._keys.api_blocked_until(api)], args=[repr(until), ttl_ms])

    async def blocked_for(self, api: str) -> float:
        raw = await self._redis.get(self._keys.api_blocked_until(api))
        if raw is None:
            return 0.0
        return max(0.0, float(raw) - self._clock())
