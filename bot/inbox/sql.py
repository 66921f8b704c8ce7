"""The SQL inbox backend (SQLite for one process, PostgreSQL for several), on table ``inbox_events``.

Design
------
* ``put`` is ``INSERT … ON CONFLICT (dedup_key) DO NOTHING``: a WeCom retry of the same callback finds its
  row and is reported as a duplicate. Rows stay after they are done, so the dedup window is unbounded.
* A row is *pending* until it is acked (``done``) or given up (``dead``). A pending row is either free,
  **in flight** (``claimed_until`` in the future: a consumer holds its lease) or **waiting for a retry**
  (``available_at`` in the future).
* Ordering per key: only the *head* of an ordering key — its pending row with the smallest id — can be
  claimed, and only while it is free. A retried head keeps blocking the later rows of its key until it is
  acked or dead; other keys are not affected and proceed in parallel, on any consumer.
* Claiming is one ``UPDATE … WHERE id IN (SELECT heads … FOR UPDATE SKIP LOCKED) RETURNING``. On
  PostgreSQL the row locks keep two processes from claiming the same head, and the lease conditions are
  re-checked on the newest row version, so a head claimed a moment ago by another process is skipped and
  the row behind it is not a head for anyone. On SQLite the statement holds the database write lock, which
  serialises claims between tasks.
* Leases: a claim sets ``claimed_until = now + lease`` and counts the attempt (``attempts + 1``), so a
  crash counts as an attempt and a poison event cannot loop forever. Each later claim by the same consumer
  renews the leases of the deliveries it still holds; a consumer that died stops renewing and its rows
  become claimable again after the lease.
* ``partition`` (CRC-32 of the ordering key) is stored like the Redis backend's lane, for backlog metrics;
  claims do not need it.
* Group commit: concurrent ``put``s share one transaction (one multi-row INSERT … RETURNING; each caller learns whether
  its own item was new; a failed batch is retried item by item so one bad item cannot refuse the others),
  and concurrent acks become one ``UPDATE … WHERE id IN (…)``. On SQLite, where every commit takes the
  single write lock, this is what keeps the edge and the worker from queueing behind each other.
* Waiting: an empty claim waits for a local put/ack/dead, the next retry or lease expiry, or ``block_ms``
  — whichever comes first. Puts by other processes are seen at the latest after ``block_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Table, and_, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bot.inbox.base import Delivery, InboxItem, InboxUnavailable, partition_for
from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.models import InboxEvent, InboxStatus

log = logging.getLogger(__name__)

_TABLE: Table = InboxEvent.__table__  # type: ignore[attr-defined]
_PENDING = InboxStatus.PENDING.value
_STORE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
_ROWS_PER_INSERT = 500  # 10 columns each: well inside SQLite's 32,766 bound parameters

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Queue items; one flusher at a time hands everything queued so far to ``flush`` (one transaction).

    ``flush`` returns one outcome per item, in order: a result, or the exception that item's caller gets. If
    ``flush`` raises, every caller of that batch gets the error.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R | Exception]]]) -> None:
        self._flush = flush
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run(), name="sql-inbox:group-commit")
        return await asyncio.shield(done)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)


class _Signal:
    """A wake-up that cannot be lost: waiters take the current event before they look for work."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class SqlInbox:
    """The :class:`~bot.inbox.base.Inbox` on a SQL table; see the module docstring for the design."""

    def __init__(self, session_factory: SessionFactory, *, partitions: int = 16, lease_seconds: float = 30) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self._sessions = session_factory
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self._held: dict[int, str] = {}  # row id → consumer, for lease renewal
        self._signal = _Signal()
        self._puts: GroupCommit[dict[str, Any], bool] = GroupCommit(self._insert_batch)
        self._acks: GroupCommit[int, None] = GroupCommit(self._ack_batch)

    # ---- put -----------------------------------------------------------------------------------------

    async def put(self, item: InboxItem) -> bool:
        now = utcnow()
        values: dict[str, Any] = {
            "corp_id": item.corp_id,
            "dedup_key": item.dedup_key,
            "ordering_key": item.ordering_key,
            "partition": partition_for(item.ordering_key, self.partitions),
            "event_type": item.event_type,
            "payload": item.payload,
            "status": _PENDING,
            "attempts": 0,
            "available_at": now,
            "received_at": now,
        }
        try:
            created = await self._puts.submit(values)
        except _STORE_ERRORS as exc:
            raise InboxUnavailable(f"SQL inbox cannot store {item.dedup_key}: {type(exc).__name__}: {exc}") from exc
        if created:
            self._signal.fire()
        return created

    async def _insert_batch(self, rows: list[dict[str, Any]]) -> list[bool | Exception]:
        """Insert the rows in one transaction (True per new row); if that fails, each in its own."""
        try:
            return list(await self._insert(rows))
        except _STORE_ERRORS:
            if len(rows) == 1:
                raise
        outcomes: list[bool | Exception] = []
        for row in rows:  # one bad row must not refuse the others; its error reaches its own caller only
            try:
                outcomes.extend(await self._insert([row]))
            except _STORE_ERRORS as exc:
                outcomes.append(exc)
        return outcomes

    async def _insert(self, rows: list[dict[str, Any]]) -> list[bool]:
        # Callers are waiting to acknowledge a callback (WeCom allows 5 s): ahead of every other waiting writer.
        async with write_transaction(self._sessions, acknowledging=True) as session:
            dialect = session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            conn = await session.connection()
            inserted: set[str] = set()
            for start in range(0, len(rows), _ROWS_PER_INSERT):  # one statement, not one per row: fewer round trips
                stmt = (
                    insert(_TABLE)
                    .values(rows[start : start + _ROWS_PER_INSERT])
                    .on_conflict_do_nothing(index_elements=["dedup_key"])
                    .returning(_TABLE.c.dedup_key)
                )
                inserted.update((await conn.execute(stmt)).scalars())
        results, seen = [], set()
        for values in rows:  # a key twice in one batch (a retry queued behind the original): only the first is new
            key = values["dedup_key"]
            results.append(key in inserted and key not in seen)
            seen.add(key)
        return results

    # ---- claim ---------------------------------------------------------------------------------------

    async def claim(self, consumer: str, *, max_items: int = 64, block_ms: int = 1000) -> list[Delivery]:
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        while True:
            wake = self._signal.current()
            deliveries, next_due = await self._claim_now(consumer, max_items)
            remaining = deadline - time.monotonic()
            if deliveries or max_items <= 0 or remaining <= 0:
                return deliveries
            timeout = remaining if next_due is None else min(remaining, max(next_due, 0.001))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _claim_now(self, consumer: str, max_items: int) -> tuple[list[Delivery], float | None]:
        """One claim transaction: renew held leases, take free heads. Returns (deliveries, seconds to next due)."""
        now = utcnow()
        until = now + timedelta(seconds=self.lease_seconds)
        held = [row_id for row_id, owner in self._held.items() if owner == consumer]
        try:
            async with write_transaction(self._sessions) as session:
                conn = await session.connection()
                if held:
                    await conn.execute(
                        update(_TABLE)
                        .where(_TABLE.c.id.in_(held), _TABLE.c.claimed_by == consumer, _TABLE.c.status == _PENDING)
                        .values(claimed_until=until)
                    )
                if max_items <= 0:
                    return [], None
                rows = (await conn.execute(self._claim_statement(consumer, now, until, max_items))).all()
                next_due = None if rows else await self._next_due(conn, now)
        except _STORE_ERRORS as exc:
            raise InboxUnavailable(f"SQL inbox cannot claim for {consumer}: {type(exc).__name__}: {exc}") from exc
        deliveries = []
        for row in sorted(rows, key=lambda r: r.id):
            self._held[row.id] = consumer
            item = InboxItem(
                dedup_key=row.dedup_key,
                ordering_key=row.ordering_key,
                event_type=row.event_type,
                corp_id=row.corp_id,
                payload=dict(row.payload or {}),
            )
            deliveries.append(Delivery(ref=str(row.id), item=item, attempts=row.attempts - 1))
        return deliveries, next_due

    @staticmethod
    def _claim_statement(consumer: str, now: datetime, until: datetime, limit: int) -> Any:
        t = _TABLE
        earlier = t.alias("earlier")
        free = and_(
            t.c.status == _PENDING,
            t.c.available_at <= now,
            or_(t.c.claimed_until.is_(None), t.c.claimed_until <= now),
        )
        blocked_by_earlier = exists(
            select(literal(1)).where(
                earlier.c.ordering_key == t.c.ordering_key,
                earlier.c.status == _PENDING,
                earlier.c.id < t.c.id,
            )
        )
        heads = (
            select(t.c.id)
            .where(free, ~blocked_by_earlier)
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=t)
            # Materialised: evaluated exactly once. Inlined, PostgreSQL may re-run it per row and, with SKIP
            # LOCKED skipping the rows this very statement just locked, return more heads than the limit.
            .cte("heads")
            .prefix_with("MATERIALIZED")
        )
        return (
            update(t)
            .where(t.c.id.in_(select(heads.c.id)), free)
            .values(claimed_by=consumer, claimed_until=until, attempts=t.c.attempts + 1)
            .returning(t.c.id, t.c.dedup_key, t.c.ordering_key, t.c.event_type, t.c.corp_id, t.c.payload, t.c.attempts)
        )

    @staticmethod
    async def _next_due(conn: Any, now: datetime) -> float | None:
        """Seconds until the next retry or lease expiry could make a head claimable (None: nothing due)."""
        t = _TABLE
        stmt = select(
            select(func.min(t.c.available_at)).where(t.c.status == _PENDING, t.c.available_at > now).scalar_subquery(),
            select(func.min(t.c.claimed_until))
            .where(t.c.status == _PENDING, t.c.claimed_until > now)
            .scalar_subquery(),
        )
        row = (await conn.execute(stmt)).one()
        times: list[datetime] = [v for v in row if v is not None]
        if not times:
            return None
        return (min(times) - now).total_seconds()

    # ---- settle --------------------------------------------------------------------------------------

    async def dead(self, delivery: Delivery, *, error: str) -> None:
        await self._finish(delivery, InboxStatus.DEAD, error=error)

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> None:
        row_id = int(delivery.ref)
        values = {
            "available_at": utcnow() + timedelta(seconds=max(delay, 0.0)),
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error,
        }
        await self._update(row_id, values, what="retry")

    async def ack(self, delivery: Delivery) -> None:
        row_id = int(delivery.ref)
        self._held.pop(row_id, None)  # see _update
        try:
            await self._acks.submit(row_id)
        except _STORE_ERRORS as exc:
            raise InboxUnavailable(f"SQL inbox cannot ack row {row_id}: {type(exc).__name__}: {exc}") from exc
        self._signal.fire()

    async def _ack_batch(self, row_ids: list[int]) -> list[Exception | None]:
        """Mark the rows done in one statement (rows no longer pending are left as they are)."""
        values = {"status": InboxStatus.DONE.value, "claimed_by": None, "claimed_until": None, "processed_at": utcnow()}
        async with write_transaction(self._sessions) as session:
            conn = await session.connection()
            await conn.execute(
                update(_TABLE).where(_TABLE.c.id.in_(row_ids), _TABLE.c.status == _PENDING).values(**values)
            )
        return [None] * len(row_ids)

    async def _finish(self, delivery: Delivery, status: InboxStatus, *, error: str | None) -> None:
        row_id = int(delivery.ref)
        values: dict[str, Any] = {
            "status": status.value,
            "claimed_by": None,
            "claimed_until": None,
            "processed_at": utcnow(),
        }
        if error is not None:
            values["last_error"] = error
        await self._update(row_id, values, what=status.value)
        self._signal.fire()

    async def _update(self, row_id: int, values: dict[str, Any], *, what: str) -> None:
        # Settled or not, this process stops renewing the lease: if the update failed, the item comes
        # back after the lease instead of staying claimed for as long as this process lives.
        self._held.pop(row_id, None)
        try:
            async with write_transaction(self._sessions) as session:
                conn = await session.connection()
                await conn.execute(
                    update(_TABLE).where(_TABLE.c.id == row_id, _TABLE.c.status == _PENDING).values(**values)
                )
        except _STORE_ERRORS as exc:
            raise InboxUnavailable(f"SQL inbox cannot {what} row {row_id}: {type(exc).__name__}: {exc}") from exc

    async def backlog(self) -> int:
        """Rows still pending (neither acked nor dead)."""
        try:
            async with self._sessions() as session:
                conn = await session.connection()
                count = await conn.scalar(select(func.count()).select_from(_TABLE).where(_TABLE.c.status == _PENDING))
        except _STORE_ERRORS as exc:
            raise InboxUnavailable(f"SQL inbox cannot count its backlog: {type(exc).__name__}: {exc}") from exc
        return int(count or 0)

    async def close(self) -> None:
        """The engine belongs to the caller; nothing of ours stays open."""
        self._held.clear()
