"""Helpers for the sync tests: a whole-database dump (to prove replays change nothing) and row readers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select as core_select
from sqlmodel import SQLModel, select

from scrm.db import SessionFactory
from scrm.models import OutboxCommand, metadata

CORP = "wwcorp0001"
T0 = datetime(2024, 5, 1, 2, 0, 0, tzinfo=UTC)

M = TypeVar("M", bound=SQLModel)


async def dump(factory: SessionFactory) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (all columns, ids and timestamps included), in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with factory() as session:
        conn = await session.connection()
        for table in metadata.sorted_tables:
            rows = await conn.execute(core_select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(row) for row in rows]
    return out


async def rows(factory: SessionFactory, model: type[M], *where: Any) -> list[M]:
    async with factory() as session:
        stmt = select(model).where(*where).order_by(*model.__table__.primary_key.columns)  # type: ignore[attr-defined]
        return list((await session.exec(stmt)).all())


async def commands(factory: SessionFactory, kind: str | None = None) -> list[OutboxCommand]:
    found = await rows(factory, OutboxCommand)
    return [c for c in found if kind is None or c.kind == kind]
