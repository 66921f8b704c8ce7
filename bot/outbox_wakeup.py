"""Wake outbox dispatchers as soon as a command is committed.

In one process this is a direct call. With Redis, a PUBLISH on ``<prefix>:outbox:wakeup`` reaches the
dispatchers of other processes, which otherwise fall back to polling. Publishing is coalesced: many
notifications within one loop iteration become one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class OutboxWakeup:
    def __init__(self, redis: aioredis.Redis | None, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._local: list[Callable[[], None]] = []
        self._publish_pending = False
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe_local(self, wake: Callable[[], None]) -> None:
        self._local.append(wake)

    def notify(self) -> None:
        """Called by handlers right after they committed commands (sync, never blocks)."""
        for wake in self._local:
            wake()
        if self._redis is not None and not self._publish_pending:
            self._publish_pending = True
            task = asyncio.get_running_loop().create_task(self._publish())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self) -> None:
        self._publish_pending = False
        assert self._redis is not None
        try:
            await self._redis.publish(self._channel, b"1")
        except RedisError as exc:  # dispatchers still poll; losing a wake-up only costs latency
            log.warning("outbox wake-up publish failed", extra={"error": str(exc)})

    async def listen(self, stop: asyncio.Event) -> None:
        """Relay wake-ups published by other processes to the local dispatchers until ``stop``."""
        if self._redis is None:
            await stop.wait()
            return
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)
        try:
            while not stop.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    for wake in self._local:
                        wake()
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.unsubscribe(self._channel)
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
