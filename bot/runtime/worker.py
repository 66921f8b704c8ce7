"""The inbox worker: claim deliveries, rebuild the typed event, route it, settle the delivery.

* The event: the edge parsed the XML, chose the event class and computed the keys; the inbox stores the decrypted
  fields with that event type. The worker runs in another process (or after a restart), so it cannot receive the
  edge's object and rebuilds it from the stored type and fields (:func:`~bot.edge.events.rebuild_event`): no XML
  is parsed and the callback is not classified again.

* Order: the inbox hands out at most one delivery per ordering key at a time (the key's oldest unfinished
  item), so running every delivery as its own task keeps one key strictly sequential while different keys
  run concurrently, up to ``concurrency`` at once.
* Failures: a handler that raises is retried after ``min(backoff_max, backoff_base * 2**(attempt-1))``
  seconds scaled by a random factor in [0.5, 1] (jitter). The inbox counts attempts at every hand-out, so
  a crash counts too and a restart does not reset the count. After ``max_attempts`` the worker writes a
  :class:`~scrm.models.DeadLetter` (source ``inbox``) and marks the item dead; later items of its key go on.
* Leases: every claim renews the leases of the deliveries this consumer holds. When all slots are busy the
  worker still claims nothing (``max_items=0``) every ``heartbeat_seconds`` so long handlers keep their items.
* Tasks: every delivery task is kept in ``self._tasks``; on stop the worker lets them finish for
  ``stop_grace`` seconds, then cancels the rest (their items come back after the lease).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable

from sqlmodel import select

from bot import metrics
from bot.edge.events import rebuild_event
from bot.inbox.base import Delivery, Inbox
from bot.runtime.router import HandlerContext, Router
from scrm.db import write_transaction
from scrm.errors import LianyiError
from scrm.models import DeadLetter

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 2000


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]


class Worker:
    def __init__(
        self,
        inbox: Inbox,
        router: Router,
        ctx: HandlerContext,
        *,
        consumer: str,
        max_attempts: int,
        concurrency: int = 8,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        claim_block_ms: int = 1000,
        heartbeat_seconds: float = 10.0,
        stop_grace: float = 5.0,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be >= 1")
        self._inbox = inbox
        self._router = router
        self._ctx = ctx
        self.consumer = consumer
        self._max_attempts = max_attempts
        self._concurrency = concurrency
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._claim_block_ms = claim_block_ms
        self._heartbeat = heartbeat_seconds
        self._stop_grace = stop_grace
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    # ---- loops ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Process the inbox until ``stop`` is set."""
        log.info("inbox worker started", extra={"consumer": self.consumer, "concurrency": self._concurrency})
        try:
            while not stop.is_set():
                free = self._concurrency - len(self._tasks)
                if free <= 0:
                    await self._wait_for_slot(stop)
                    if self._concurrency - len(self._tasks) <= 0:
                        await self._claim(0, 0, stop)  # renew the leases of the running deliveries
                    continue
                for delivery in await self._claim(free, self._claim_block_ms, stop):
                    self._spawn(delivery)
        finally:
            await self._drain()
            log.info("inbox worker stopped", extra={"consumer": self.consumer})

    async def run_once(self) -> int:
        """Process everything claimable now (retries that are not yet due are left). Returns how many ran."""
        handled = 0
        while True:
            deliveries = await self._inbox.claim(self.consumer, max_items=self._concurrency, block_ms=0)
            if not deliveries:
                return handled
            batch = [self._spawn(d) for d in deliveries]
            await asyncio.gather(*batch)
            handled += len(deliveries)

    # ---- one delivery --------------------------------------------------------------------------------

    def _spawn(self, delivery: Delivery) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._process(delivery), name=f"inbox:{delivery.ref}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("inbox delivery task crashed", extra={"task": task.get_name()}, exc_info=task.exception())

    async def _process(self, delivery: Delivery) -> None:
        item = delivery.item
        started = time.perf_counter()
        try:
            event = rebuild_event(item.event_type, item.payload)
            await self._router.dispatch(event, self._ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler bug or a domain error: both are retried, then dead-lettered
            await self._failed(delivery, exc)
            return
        metrics.HANDLER_SECONDS.labels(item.event_type).observe(time.perf_counter() - started)
        metrics.INBOX_HANDLED.labels(item.event_type, "ok").inc()
        try:
            await self._inbox.ack(delivery)
        except LianyiError as exc:
            log.error(
                "inbox ack failed for %s; it will be handled again after its lease: %s",
                item.dedup_key,
                describe_error(exc),
                extra={"dedup_key": item.dedup_key, "ref": delivery.ref},
            )

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        item = delivery.item
        attempt = delivery.attempts + 1
        error = describe_error(exc)
        extra = {"dedup_key": item.dedup_key, "event_type": item.event_type, "attempt": attempt, "error": error}
        try:
            if attempt >= self._max_attempts:
                log.error(
                    "handler failed for %s (attempt %d/%d), dead-lettered: %s",
                    item.dedup_key,
                    attempt,
                    self._max_attempts,
                    error,
                    extra=extra,
                    exc_info=exc,
                )
                await self._write_dead_letter(delivery, error, attempt)
                await self._inbox.dead(delivery, error=error)
                metrics.INBOX_HANDLED.labels(item.event_type, "dead").inc()
                return
            delay = self.backoff(attempt)
            log.warning(
                "handler failed for %s (attempt %d/%d), retry in %.1fs: %s",
                item.dedup_key,
                attempt,
                self._max_attempts,
                delay,
                error,
                extra={**extra, "retry_in": round(delay, 3)},
            )
            await self._inbox.retry(delivery, delay=delay, error=error)
            metrics.INBOX_HANDLED.labels(item.event_type, "retry").inc()
        except Exception as settle_exc:  # the store is down: the lease brings the item back later
            log.error(
                "could not record the failure of %s (attempt %d): %s",
                item.dedup_key,
                attempt,
                describe_error(settle_exc),
                extra=extra,
            )

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based): capped exponential with jitter in [0.5, 1]."""
        ceiling = min(self._backoff_max, self._backoff_base * 2.0 ** min(attempt - 1, 62))
        return float(ceiling * (0.5 + random.random() / 2))

    async def _write_dead_letter(self, delivery: Delivery, error: str, attempt: int) -> None:
        item = delivery.item
        async with write_transaction(self._ctx.session_factory) as session:
            # After a crash between this insert and inbox.dead the item comes back once more: keep one row.
            existing = await session.exec(
                select(DeadLetter.id).where(
                    DeadLetter.source == "inbox",
                    DeadLetter.ref == item.dedup_key,
                    DeadLetter.replayed_at.is_(None),  # type: ignore[union-attr]
                )
            )
            if existing.first() is not None:
                return
            session.add(
                DeadLetter(
                    corp_id=item.corp_id,
                    source="inbox",
                    ref=item.dedup_key,
                    event_type=item.event_type,
                    ordering_key=item.ordering_key,
                    payload=item.payload,
                    error=error,
                    attempts=attempt,
                )
            )

    # ---- plumbing ------------------------------------------------------------------------------------

    async def _claim(self, max_items: int, block_ms: int, stop: asyncio.Event) -> list[Delivery]:
        try:
            return await self._inbox.claim(self.consumer, max_items=max_items, block_ms=block_ms)
        except LianyiError as exc:
            log.error("inbox claim failed; retrying in 1s: %s", describe_error(exc), extra={"consumer": self.consumer})
            await _wait_any([stop], seconds=1.0)
            return []

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        self._slot_freed.clear()
        await _wait_any([stop, self._slot_freed], seconds=self._heartbeat)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self._stop_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _wait_any(events: Iterable[asyncio.Event], *, seconds: float) -> None:
    """Return when any event is set or ``seconds`` pass; the waiter tasks never outlive the call."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
