"""Alembic migrations build exactly the schema of scrm.models, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from bot.runtime import migrate
from scrm.db import make_engine
from scrm.models import metadata
from tests.conftest import _pg_admin, pg_async_url


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"lianyi_mig_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield pg_async_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _diff(url: str) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_builds_the_model_schema(empty_database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database_url)
    assert await migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert set(metadata.tables) <= await _tables(empty_database_url)
    assert await _diff(empty_database_url) == []


async def test_upgrade_twice_is_a_no_op(empty_database_url: str) -> None:
    await migrate.upgrade_async(empty_database_url)
    await migrate.upgrade_async(empty_database_url)
    assert await migrate.current_revision(empty_database_url) == migrate.head_revision()


async def test_downgrade_to_nothing_and_back(empty_database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database_url)
    await asyncio.to_thread(migrate.downgrade, empty_database_url, "base")
    assert not (set(metadata.tables) & await _tables(empty_database_url))
    await asyncio.to_thread(migrate.upgrade, empty_database_url)
    assert await _diff(empty_database_url) == []
