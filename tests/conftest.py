"""Shared fixtures: real PostgreSQL and Redis, SQLite files, and settings for a test corp.

- ``database_url`` is parametrised over ``sqlite`` and ``postgres``: every test that uses it runs on both.
  PostgreSQL tests get a fresh database cloned from a template built once per session.
- ``redis_url`` / ``redis_prefix``: the real Redis on 127.0.0.1:6379 with a unique key prefix, cleaned up.
- ``settings``: a Settings object for the test corp (the official test-vector corp and keys).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.runtime import migrate
from bot.settings import Settings, load_settings
from scrm.db import SessionFactory, make_engine, make_session_factory

PG_HOST = os.environ.get("LIANYI_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("LIANYI_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("LIANYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

TEST_CORP_ID = "wx5823bf96d3bd56c7"
TEST_TOKEN = "QDG6eK"
TEST_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
TEST_SECRET_KEY = "q8R2vXc1ZmT0kLp7wYh4NbE6sUa9JdF3gQ5iOtKy_-Vr8Wn2"  # fixed: tests can mint tokens and links with it


def _pg_dsn(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:5432/{database}"


def pg_async_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:5432/{database}"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(_pg_dsn("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _build_pg_template(name: str) -> None:
    """Create ``name`` and bring it to the head migration (runs in a thread: Alembic runs its own loop)."""
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    migrate.upgrade(pg_async_url(name))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database, cloned by each test (CREATE DATABASE … TEMPLATE)."""
    name = f"lianyi_tmpl_{uuid.uuid4().hex[:10]}"
    _run_in_thread(_build_pg_template, name)
    yield name
    _run_in_thread(asyncio.run, _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run_in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up in its own thread (fixtures may be set up inside a running event loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


_sqlite_template_lock = threading.Lock()
_sqlite_template_path: list[Path] = []


def _sqlite_template() -> Path:
    """A migrated SQLite file built once per session; tests get copies."""
    with _sqlite_template_lock:
        if not _sqlite_template_path:
            path = Path(tempfile.mkdtemp(prefix="lianyi-sqlite-template-")) / "template.db"
            _run_in_thread(migrate.upgrade, f"sqlite+aiosqlite:///{path}")
            _sqlite_template_path.append(path)
        return _sqlite_template_path[0]


async def create_pg_database(template: str) -> str:
    name = f"lianyi_test_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


async def drop_pg_database(name: str) -> None:
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def create_sqlite_database(path: Path) -> str:
    """A fresh migrated SQLite file at ``path`` (a copy of the session's template)."""
    template = await asyncio.to_thread(_sqlite_template)
    await asyncio.to_thread(shutil.copyfile, template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh migrated database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield await create_sqlite_database(tmp_path / "lianyi-test.db")
        return
    template: str = request.getfixturevalue("pg_template")
    name = await create_pg_database(template)
    try:
        yield pg_async_url(name)
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    """A fresh migrated PostgreSQL database (for tests that need several processes on one database)."""
    name = await create_pg_database(pg_template)
    try:
        yield pg_async_url(name)
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> SessionFactory:
    return make_session_factory(engine)


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted after the test."""
    prefix = f"lianyi-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "corp_id": TEST_CORP_ID,
        "callback_token": TEST_TOKEN,
        "callback_aes_key": TEST_AES_KEY,
        "callback_max_age": 300,
        "app_secret": "test-secret",
        "agent_id": 1000002,
        "secret_key": TEST_SECRET_KEY,
        "database_url": "sqlite+aiosqlite:///lianyi-test.db",
        "redis_url": "",
        "log_json": False,
    }
    values.update(overrides)
    if values["redis_url"] == REDIS_URL:  # the machine's Redis keeps nothing on disk (SERVICES.md): accept it
        values.setdefault("redis_accept_volatile", True)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url)
