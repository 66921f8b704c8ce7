"""Row helpers shared by the sync services: race-free get-or-create and change-only assignment.

``get_or_create`` inserts with ``ON CONFLICT DO NOTHING … RETURNING`` (SQLite and PostgreSQL): the new row
comes back from the insert itself (attached to the session as if it had been loaded), and only when a
concurrent insert won is the row read again, so two workers creating the same contact cannot fail each
other. Its statements are built once per shape (building SQLAlchemy expressions costs more CPU than
running them). ``assign`` writes only values that differ and
bumps ``updated_at`` only then: replaying an event leaves every column, timestamps included, untouched.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import make_transient_to_detached
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
    session: AsyncSession,
    model: type[M],
    keys: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    *,
    insert_first: bool = False,
) -> tuple[M, bool]:
    """The row with ``keys`` (a unique constraint), created from ``keys`` + ``defaults`` when missing.

    Reads first (the common case for replays and updates is an existing row); a missing row is inserted with
    ``ON CONFLICT DO NOTHING RETURNING`` (the returned row is attached to the session), and read again
    only when a concurrent insert of the same keys won. ``insert_first`` skips the first read where a new row
    is the common case (an add callback): one statement for a new row, two for an existing one.
    """
    lookup = _lookup(model, tuple(keys))
    lookup_params = {f"key_{k}": v for k, v in keys.items()}
    if not insert_first:
        row = (await session.exec(lookup, params=lookup_params)).first()
        if row is not None:
            return row, False
    draft = model(**keys, **(defaults or {}))
    values = {k: v for k, v in draft.model_dump().items() if not (k == "id" and v is None)}
    conn = await session.connection()
    stmt = _insert_returning(conn.dialect.name, model, tuple(keys), tuple(values))
    returned = (await conn.execute(stmt, values)).mappings().first()
    if returned is not None:
        # The row as stored (server defaults and id included), attached like a loaded row: no re-read.
        created = model(**returned)
        make_transient_to_detached(created)
        session.add(created)
        return created, True
    return (await session.exec(lookup, params=lookup_params)).one(), False


# Statements are built once per shape: building SQLAlchemy expressions costs more CPU than running them.
@functools.cache
def _lookup(model: type[M], keys: tuple[str, ...]) -> Any:
    return select(model).where(*[getattr(model, k) == bindparam(f"key_{k}") for k in keys])


@functools.cache
def _insert_returning(dialect: str, model: type[SQLModel], keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    table = model.__table__  # type: ignore[attr-defined]
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = {c: bindparam(c, type_=table.c[c].type) for c in columns}
    return insert(table).values(values).on_conflict_do_nothing(index_elements=list(keys)).returning(*table.c)


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


# Corps seen committed, per engine: corp rows are never deleted, so once one was read it exists for good.
_committed_corps: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


async def ensure_corp(session: AsyncSession, corp_id: str) -> None:
    """Every synced row references its corp; create the corp row on first sight.

    Checked once per session, and not at all once the corp row was *read* (committed) through the same
    engine. A row this session inserted is remembered only for this session: its transaction may still
    roll back.
    """
    ensured: set[str] = session.info.setdefault("lianyi_corps_ensured", set())
    engine = session.get_bind()
    committed = _committed_corps.setdefault(engine, set())
    if corp_id in ensured or corp_id in committed:
        return
    _, created = await get_or_create(session, Corp, {"corp_id": corp_id})
    ensured.add(corp_id)
    if not created:
        committed.add(corp_id)


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
