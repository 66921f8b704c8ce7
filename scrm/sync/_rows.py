"""Row helpers shared by the sync services: race-free get-or-create and change-only assignment.

``get_or_create`` inserts with ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL) and then reads the row, so
two workers creating the same contact cannot fail each other. ``assign`` writes only values that differ and
bumps ``updated_at`` only then: replaying an event leaves every column, timestamps included, untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db_types import utcnow
from scrm.models import Corp

M = TypeVar("M", bound=SQLModel)


def insert_ignore(session: AsyncSession, model: type[SQLModel], values: Mapping[str, Any], keys: list[str]) -> Any:
    """``INSERT … ON CONFLICT (keys) DO NOTHING`` for the session's dialect."""
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)


async def get_or_create(
    session: AsyncSession, model: type[M], keys: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> tuple[M, bool]:
    """The row with ``keys`` (a unique constraint), created from ``keys`` + ``defaults`` when missing.

    Reads first (the common case is an existing row); a missing row is inserted with ``ON CONFLICT DO
    NOTHING`` and read again, so a concurrent insert of the same keys wins without an error.
    """
    stmt = select(model).where(*[getattr(model, k) == v for k, v in keys.items()])
    row = (await session.exec(stmt)).first()
    if row is not None:
        return row, False
    draft = model(**keys, **(defaults or {}))
    values = {k: v for k, v in draft.model_dump().items() if not (k == "id" and v is None)}
    conn = await session.connection()
    result = await conn.execute(insert_ignore(session, model, values, list(keys)))
    return (await session.exec(stmt)).one(), bool(result.rowcount)


def assign(row: SQLModel, values: Mapping[str, Any], *, touch: str | None = "updated_at") -> bool:
    """Set the attributes that differ; bump ``touch`` (``updated_at``) when anything changed."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    if changed and touch and hasattr(row, touch):
        setattr(row, touch, utcnow())
    return changed


async def ensure_corp(session: AsyncSession, corp_id: str) -> None:
    """Every synced row references its corp; create the corp row on first sight (once per session)."""
    ensured: set[str] = session.info.setdefault("lianyi_corps_ensured", set())
    if corp_id in ensured:
        return
    await get_or_create(session, Corp, {"corp_id": corp_id})
    ensured.add(corp_id)


def from_epoch(value: Any) -> datetime | None:
    """A WeCom unix timestamp (int or numeric str) as an aware UTC datetime; 0/empty/garbage → None."""
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return None
    if seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())
