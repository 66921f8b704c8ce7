"""SQLite writers of one process take turns: an acknowledging writer (the inbox's put) first, background last."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from scrm.db import SessionFactory, checkpoint, make_engine, make_session_factory, write_transaction


async def test_waiting_writers_go_ack_then_urgent_then_background(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    factory = make_session_factory(engine)
    order: list[str] = []
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with write_transaction(factory):
            holding.set()
            await release.wait()

    async def writer(name: str, *, urgent: bool = True, acknowledging: bool = False) -> None:
        async with write_transaction(factory, urgent=urgent, acknowledging=acknowledging):
            order.append(name)

    try:
        held = asyncio.create_task(holder())
        await holding.wait()
        waiting = [
            asyncio.create_task(writer("background", urgent=False)),
            asyncio.create_task(writer("urgent 1")),
            asyncio.create_task(writer("ack", acknowledging=True)),
            asyncio.create_task(writer("urgent 2")),
        ]
        for _ in range(3):  # each task runs up to its wait for a turn
            await asyncio.sleep(0)
        assert order == []
        release.set()
        await asyncio.gather(held, *waiting)
    finally:
        await engine.dispose()
    assert order == ["ack", "urgent 1", "urgent 2", "background"]


async def _bump(factory: SessionFactory, read: asyncio.Event | None = None, pause: asyncio.Event | None = None) -> None:
    """Read the counter, (say so and wait,) write it plus one: a read-modify-write in one write transaction."""
    async with write_transaction(factory) as session:
        conn = await session.connection()
        value = (await conn.execute(text("SELECT n FROM counter"))).scalar_one()
        if read is not None and pause is not None:
            read.set()
            await pause.wait()
        await conn.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})


async def test_a_write_transaction_owns_the_file_from_begin_against_other_processes(tmp_path: Path) -> None:
    """Two engines are two processes (``lianyi ingest`` beside ``lianyi serve``): turns cannot order them, so the
    transaction takes SQLite's write lock at BEGIN; a deferred one would let the other's update in between."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'processes.db'}"
    ours, theirs = make_engine(url), make_engine(url)
    try:
        async with ours.begin() as conn:
            await conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await conn.execute(text("INSERT INTO counter VALUES (0)"))
        read, pause = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_bump(make_session_factory(ours), read, pause))
        await read.wait()
        second = asyncio.create_task(_bump(make_session_factory(theirs)))
        await asyncio.wait({second}, timeout=1.0)  # given the chance, a deferred writer commits here
        pause.set()
        await asyncio.gather(first, second)
        async with ours.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM counter"))).scalar_one() == 2  # no update lost
    finally:
        await ours.dispose()
        await theirs.dispose()


async def test_background_checkpoints_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    """The server's engine never checkpoints in a commit (that writer would hold the lock through the fsync);
    :func:`checkpoint` copies the WAL back instead."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}"
    server, tool = make_engine(url, background_checkpoints=True), make_engine(url)
    try:
        async with server.begin() as conn:
            await conn.execute(text("CREATE TABLE pad (b BLOB NOT NULL)"))
        async with write_transaction(make_session_factory(server)) as session:
            conn = await session.connection()
            for _ in range(1200):  # past the 1,000 pages at which a commit would checkpoint
                await conn.execute(text("INSERT INTO pad VALUES (randomblob(4000))"))
        async with server.connect() as conn, tool.connect() as other:
            assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one() == 0
            assert (await other.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one() == 1000
        assert await checkpoint(server) > 1000  # the whole WAL was still waiting to be copied back
    finally:
        await server.dispose()
        await tool.dispose()
