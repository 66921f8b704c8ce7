"""``INSERT … ON CONFLICT DO NOTHING`` for idempotent rows (keys, refs), built once per table, dialect and
column set, values bound per call."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession


@functools.cache
def _statement(table: Table, dialect: str, columns: tuple[str, ...], conflict: tuple[str, ...]) -> Any:
    values = {c: bindparam(c, type_=table.c[c].type) for c in columns}
    if dialect == "postgresql":
        return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect == "sqlite":
        return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=list(conflict))
    raise ValueError(f"unsupported database dialect {dialect!r} (SQLite and PostgreSQL only)")


async def insert_ignoring_conflict(
    session: AsyncSession, table: Table, values: dict[str, Any], conflict: tuple[str, ...]
) -> bool:
    """Insert one row in the caller's transaction unless ``conflict`` columns clash; True when inserted."""
    conn = await session.connection()
    statement = _statement(table, conn.dialect.name, tuple(sorted(values)), conflict)
    result = await conn.execute(statement, values)
    return bool(result.rowcount)
