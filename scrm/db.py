"""Database engine and sessions (async SQLAlchemy under SQLModel)."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SessionFactory = async_sessionmaker[AsyncSession]
# Execution option of a SQLite connection whose transaction takes the write lock at BEGIN (see write_transaction).
_BEGIN_IMMEDIATE = "lianyi_sqlite_begin_immediate"


def make_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL and a busy timeout so several tasks can share the file.

    ``hide_parameters``: an error's message never carries the statement's values (message text, names, phone
    numbers), so logging an exception cannot leak them.

    ``background_checkpoints`` (SQLite; the server's engine): no commit copies the WAL back into the database
    file (SQLite does that in the commit that crosses 1,000 pages, fsync included: seconds on a busy disk, while
    that writer holds the write lock and every callback waits); the caller runs :func:`checkpoint` instead.
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
    else:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            if background_checkpoints:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if conn.get_execution_options().get(_BEGIN_IMMEDIATE):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def checkpoint(engine: AsyncEngine) -> int:
    """SQLite: copy what the WAL holds into the database file without waiting for (or blocking) writers or
    readers (``PASSIVE``); returns the WAL frames now checkpointed. Other databases: nothing, 0."""
    if engine.dialect.name != "sqlite":
        return 0
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        busy_and_frames: tuple[int, int, int] = tuple(result.one())  # (busy, WAL frames, frames checkpointed)
    return int(busy_and_frames[2])


def make_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any exception."""
    async with factory() as session, session.begin():
        yield session


class _WriteTurns:
    """A lock with three FIFO queues: a waiting acknowledging writer goes before every waiting urgent writer, and
    an urgent one before every waiting background writer."""

    ACK, URGENT, BACKGROUND = 0, 1, 2

    def __init__(self) -> None:
        self._busy = False
        self._queues: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque(), deque())

    async def acquire(self, rank: int) -> None:
        if not self._busy and not any(self._queues):
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[rank].append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the turn was handed to us just before the cancel
                self.release()
            raise

    def release(self) -> None:
        for queue in self._queues:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # ownership passes on; _busy stays True
                    return
        self._busy = False


# One writer queue per SQLite engine (and event loop): see write_transaction.
_sqlite_writers: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, _WriteTurns]] = (
    weakref.WeakKeyDictionary()
)


def _sqlite_turns(factory: SessionFactory) -> _WriteTurns | None:
    bind = factory.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    loop = asyncio.get_running_loop()
    entry = _sqlite_writers.get(bind.sync_engine)
    if entry is None or entry[0] is not loop:
        entry = (loop, _WriteTurns())
        _sqlite_writers[bind.sync_engine] = entry
    return entry[1]


@asynccontextmanager
async def write_transaction(
    factory: SessionFactory, *, urgent: bool = True, acknowledging: bool = False
) -> AsyncIterator[AsyncSession]:
    """:func:`transaction` for a unit of work that writes (inbox, handlers, outbox, ticks, ingest).

    On SQLite the file has one writer at a time; writers of one process that fight for it wait in SQLite's
    busy handler, which sleeps in steps of up to 100 ms, and a deferred transaction that read before another
    writer committed fails when it tries to write ("database is locked"). So on SQLite the transaction begins
    with ``BEGIN IMMEDIATE`` (it waits for the lock once, up front, also against other processes such as
    ``lianyi ingest``), and the writers of one process take turns in process (no sleeping):
    ``acknowledging=True`` (the inbox's put: WeCom waits for its answer) goes before every other waiting
    writer, and ``urgent=False`` work (background fetches, SOP ticks) lets every waiting urgent writer
    go first. Never nest it (turns are not re-entrant). PostgreSQL: plain :func:`transaction`.
    """
    turns = _sqlite_turns(factory)
    if turns is None:
        async with transaction(factory) as session:
            yield session
        return
    rank = _WriteTurns.ACK if acknowledging else _WriteTurns.URGENT if urgent else _WriteTurns.BACKGROUND
    await turns.acquire(rank)
    try:
        async with transaction(factory) as session:
            await session.connection(execution_options={_BEGIN_IMMEDIATE: True})
            yield session
    finally:
        turns.release()
