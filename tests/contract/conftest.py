"""The inbox backends under contract: SQL on SQLite, SQL on PostgreSQL, Redis Streams on a real Redis.

``database_url`` is overridden here so that it follows the backend: the SQL backends run on their own
database; the Redis backend gets a (unused) SQLite file so the shared fixtures stay valid.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.inbox.base import Inbox
from bot.inbox.redis_streams import RedisInbox
from bot.inbox.sql import SqlInbox
from bot.redis_keys import RedisKeys
from scrm.db import SessionFactory, make_engine, make_session_factory
from tests.conftest import create_pg_database, create_sqlite_database, drop_pg_database, pg_async_url

BACKENDS = ["sql-sqlite", "sql-postgres", "redis"]


@pytest.fixture(params=BACKENDS)
def inbox_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(inbox_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if inbox_backend != "sql-postgres":
        yield await create_sqlite_database(tmp_path / "contract.db")
        return
    name = await create_pg_database(request.getfixturevalue("pg_template"))
    try:
        yield pg_async_url(name)
    finally:
        await drop_pg_database(name)


@dataclass
class Backend:
    """Builds inboxes that share one store (each inbox instance stands for one process)."""

    name: str
    make: Callable[..., Inbox]  # make(lease_seconds=30.0) -> Inbox
    make_unreachable: Callable[[], Inbox]


@pytest.fixture
async def backend(
    inbox_backend: str,
    session_factory: SessionFactory,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Backend]:
    clients: list[aioredis.Redis] = []
    engines = []
    made: list[Inbox] = []

    def make(lease_seconds: float = 30.0) -> Inbox:
        inbox: Inbox
        if inbox_backend == "redis":
            client = aioredis.from_url(redis_url)
            clients.append(client)
            inbox = RedisInbox(client, RedisKeys(redis_prefix), partitions=4, lease_seconds=lease_seconds)
        else:
            inbox = SqlInbox(session_factory, partitions=4, lease_seconds=lease_seconds)
        made.append(inbox)
        return inbox

    def make_unreachable() -> Inbox:
        if inbox_backend == "redis":
            client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
            clients.append(client)
            return RedisInbox(client, RedisKeys(redis_prefix))
        if inbox_backend == "sql-postgres":
            url = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
        else:
            url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'inbox.db'}"
        engine = make_engine(url)
        engines.append(engine)
        return SqlInbox(make_session_factory(engine))

    yield Backend(inbox_backend, make, make_unreachable)
    for inbox in made:
        await inbox.close()
    for client in clients:
        await client.aclose()
    for engine in engines:
        await engine.dispose()
