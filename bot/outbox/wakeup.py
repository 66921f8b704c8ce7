"""Waking dispatchers in other processes (Redis pub/sub on ``outbox_wakeup``).

In one process the worker calls :meth:`OutboxDispatcher.wake` right after a commit. When the worker and
the dispatcher run in different processes, the worker calls :func:`publish_wakeup` after the commit and
each dispatcher process runs :func:`relay_wakeups`, so a welcome message does not wait for the poll. A lost
message only costs one poll interval: the poll remains the safety net.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.redis_keys import RedisKeys

log = logging.getLogger(__name__)


class Wakeable(Protocol):
    def wake(self) -> None: ...


async def publish_wakeup(redis: Redis, keys: RedisKeys) -> None:
    """Tell every dispatcher that new commands were committed."""
    await redis.publish(keys.outbox_wakeup(), "1")


async def relay_wakeups(
    redis: Redis,
    keys: RedisKeys,
    dispatcher: Wakeable,
    stop: asyncio.Event,
    *,
    subscribed: asyncio.Event | None = None,
) -> None:
    """Wake ``dispatcher`` for every published wake-up until ``stop`` is set (``subscribed`` is set once
    wake-ups are being received)."""
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(keys.outbox_wakeup())
        if subscribed is not None:
            subscribed.set()
        while not stop.is_set():
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except RedisError as exc:
                log.warning("outbox wake-up relay lost Redis; the poll still runs", extra={"error": repr(exc)})
                return
            if message is not None:
                dispatcher.wake()
    finally:
        await pubsub.aclose()


class OutboxWakeup:
    """What the runtime hands to handlers as ``notify_outbox``: wake local dispatchers at once and, with
    Redis, publish once per loop iteration for dispatchers in other processes (many commits in a burst
    become one message)."""

    def __init__(self, redis: Redis | None, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._local: list[Wakeable] = []
        self._publish_pending = False
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe_local(self, dispatcher: Wakeable) -> None:
        self._local.append(dispatcher)

    def wake(self) -> None:
        for dispatcher in self._local:
            dispatcher.wake()

    def notify(self) -> None:
        """Called right after commands were committed; never blocks."""
        self.wake()
        if self._redis is not None and not self._publish_pending:
            self._publish_pending = True
            task = asyncio.get_running_loop().create_task(self._publish(self._redis))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, redis: Redis) -> None:
        self._publish_pending = False
        try:
            await publish_wakeup(redis, self._keys)
        except RedisError as exc:  # dispatchers still poll; a lost wake-up only costs latency
            log.warning("outbox wake-up publish failed", extra={"error": repr(exc)})

    async def listen(self, stop: asyncio.Event) -> None:
        """Relay wake-ups published by other processes to the local dispatchers until ``stop``."""
        if self._redis is None:
            await stop.wait()
            return
        await relay_wakeups(self._redis, self._keys, self, stop)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
