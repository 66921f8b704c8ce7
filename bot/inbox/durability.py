"""Is the Redis behind the inbox durable? The edge acknowledges a callback once the inbox holds it, and WeCom never
sends an acknowledged callback again, so a Redis that keeps nothing on disk loses those callbacks for good when it
restarts (attack 7 of issue 13: 50 acked, Redis restarted, 0 processed, nothing logged).

What counts (README "Redis in production"):

* **durable**: AOF on (``appendonly yes``) with ``appendfsync everysec`` (a power cut loses up to ~1 s of
  acknowledged writes; a crash or restart of Redis alone loses nothing) or ``always`` (nothing acknowledged is lost);
* **refused**: no AOF — nothing kept (``save ""``) or RDB snapshots only (a restart loses every write since the last
  snapshot, minutes by default); AOF with ``appendfsync no`` (the OS flushes when it likes, ~30 s on Linux); an AOF
  whose last write failed.

``CONFIG GET`` gives ``appendfsync`` and ``save``; managed Redis often disables or renames CONFIG, and then the
``INFO persistence`` fields decide alone (``aof_enabled``, ``aof_last_write_status``), the fsync policy being
unknown (assumed ``everysec``, the default of Redis and of the managed services).

:class:`PersistenceGuard` keeps the verdict fresh while the process runs (Redis can be reconfigured or restarted
under another configuration): it re-reads every ``interval`` seconds, at once after a failed put, and every second
while the verdict is bad or unknown. :class:`GuardedInbox` refuses puts (``InboxUnavailable`` → the edge answers
503, so WeCom retries later) until a check says durable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.inbox.base import Delivery, Inbox, InboxItem, InboxUnavailable
from scrm.errors import SettingsError

log = logging.getLogger(__name__)

_FIX_EN = (
    "set `appendonly yes` and `appendfsync everysec` (or `always`) in that Redis, or set LIANYI_INBOX_BACKEND=sql "
    "to keep the inbox in the database, or set LIANYI_REDIS_ACCEPT_VOLATILE=true to accept losing them"
)
_FIX_ZH = (
    "请在该 Redis 中设置 appendonly yes 和 appendfsync everysec（或 always），或设置 LIANYI_INBOX_BACKEND=sql "
    "改用数据库收件箱，或设置 LIANYI_REDIS_ACCEPT_VOLATILE=true 明确接受丢失风险"
)
_UNSAFE_FSYNC = {"no"}
_RECHECK_WHILE_BAD = 1.0  # seconds between checks while puts are refused


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class RedisPersistence:
    """What a Redis server says about how it keeps data. ``None`` = not readable (CONFIG disabled)."""

    aof_enabled: bool
    aof_last_write_ok: bool
    appendfsync: str | None
    save: str | None

    def problem(self) -> str | None:
        """Why acknowledged writes would not survive a restart or a power cut, or None when they do."""
        if not self.aof_enabled:
            if self.save is None:
                return "appendonly no: RDB snapshots alone lose every write since the last one"
            if self.save.strip() == "":
                return 'appendonly no, save "": nothing is kept on disk'
            return f'appendonly no, RDB snapshots only (save "{self.save}"): every write since the last one is lost'
        if self.appendfsync in _UNSAFE_FSYNC:
            return "appendfsync no: the OS flushes the AOF when it likes, ~30 s of writes can be lost"
        if not self.aof_last_write_ok:
            return "aof_last_write_status is not ok: the last AOF write failed"
        return None

    def describe(self) -> str:
        fsync = self.appendfsync if self.appendfsync is not None else "unknown (CONFIG unavailable)"
        save = f'"{self.save}"' if self.save is not None else "unknown"
        return f"appendonly {'yes' if self.aof_enabled else 'no'}, appendfsync {fsync}, save {save}"


async def read_persistence(redis: aioredis.Redis) -> RedisPersistence:
    """``INFO persistence``, plus ``CONFIG GET appendfsync save`` when the server allows CONFIG."""
    info = await redis.info("persistence")
    appendfsync: str | None = None
    save: str | None = None
    try:
        config = {_text(k): _text(v) for k, v in (await redis.config_get("appendfsync", "save")).items()}
    except ResponseError:  # CONFIG renamed/disabled (managed Redis) or not allowed by the ACL
        pass
    else:
        appendfsync, save = config.get("appendfsync"), config.get("save")
    return RedisPersistence(
        aof_enabled=int(info.get("aof_enabled", 0)) == 1,
        aof_last_write_ok=_text(info.get("aof_last_write_status", "ok")) == "ok",
        appendfsync=appendfsync,
        save=save,
    )


class InboxNotDurable(SettingsError):
    """The Redis inbox would lose acknowledged callbacks; the edge refuses to start. ``message_zh`` for the CLI."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"refusing to start the callback edge: the Redis inbox of LIANYI_REDIS_URL would lose acknowledged "
            f"callbacks on a restart [{problem}]; {_FIX_EN}"
        )
        self.message_zh = (
            f"拒绝启动回调入口：LIANYI_REDIS_URL 的 Redis 重启会丢失已确认的回调（{problem}）。{_FIX_ZH}。"
        )


class PersistenceGuard:
    """The latest verdict on the inbox's Redis: ``problem`` is None while it is durable."""

    def __init__(self, redis: aioredis.Redis, *, interval: float) -> None:
        self._redis = redis
        self._interval = interval
        self._wake = asyncio.Event()
        self.problem: str | None = "persistence not checked yet"
        self.definite = False  # the problem was read from Redis (not an outage)
        self._checked = False  # the first check is reported by the runtime, not here

    async def check(self) -> None:
        """Read the server's persistence now; log when the verdict changes."""
        problem: str | None
        try:
            persistence = await read_persistence(self._redis)
        except RedisError as exc:
            problem, definite = f"cannot read Redis persistence ({type(exc).__name__})", False
        else:
            problem, definite = persistence.problem(), True
        before, first = self.problem, not self._checked
        self.problem, self.definite, self._checked = problem, definite, True
        if problem is not None and problem != before and definite and not first:
            log.error(
                "the Redis inbox no longer persists [%s]: callbacks are refused with 503 until it does; %s",
                problem,
                _FIX_EN,
            )
        elif problem is None and before is not None:
            log.info("the Redis inbox persists [%s]: callbacks are accepted", persistence.describe())

    def require(self) -> None:
        """Raise InboxUnavailable unless the last check said durable."""
        if self.problem is not None:
            raise InboxUnavailable(f"Redis inbox refuses puts: {self.problem}")

    def recheck_soon(self) -> None:
        self._wake.set()

    async def watch(self, stop: asyncio.Event) -> None:
        """Re-check every ``interval`` seconds (every second while refusing), at once when woken, until ``stop``."""
        while not stop.is_set():
            delay = self._interval if self.problem is None else min(self._interval, _RECHECK_WHILE_BAD)
            stopping = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({stopping, woken}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (stopping, woken):
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            if stop.is_set():
                return
            self._wake.clear()
            await self.check()


class GuardedInbox:
    """An inbox whose ``put`` is refused while its Redis does not persist; everything else passes through."""

    def __init__(self, inner: Inbox, guard: PersistenceGuard) -> None:
        self.inner = inner
        self.guard = guard

    async def put(self, item: InboxItem) -> bool:
        self.guard.require()
        try:
            return await self.inner.put(item)
        except InboxUnavailable:
            self.guard.recheck_soon()  # Redis may come back as another server: confirm before the next put
            raise

    async def claim(self, consumer: str, *, max_items: int = 64, block_ms: int = 1000) -> list[Delivery]:
        return await self.inner.claim(consumer, max_items=max_items, block_ms=block_ms)

    async def ack(self, delivery: Delivery) -> None:
        await self.inner.ack(delivery)

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> None:
        await self.inner.retry(delivery, delay=delay, error=error)

    async def dead(self, delivery: Delivery, *, error: str) -> None:
        await self.inner.dead(delivery, error=error)

    async def backlog(self) -> int:
        return await self.inner.backlog()

    async def close(self) -> None:
        await self.inner.close()
