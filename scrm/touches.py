"""The touch ledger: every message that reaches a customer or a group, counted by the contact policy.

SOPs write here today; campaigns and lead notifications write through :func:`record_touch` too, so one
customer's daily and weekly caps and WeCom's group-send quota are counted across all of them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.contact_policy import Policy
from scrm.models import ContactTouch

_table = ContactTouch.__table__  # type: ignore[attr-defined]


@functools.cache
def _insert(dialect: str) -> Any:
    columns = ("corp_id", "recipient_type", "recipient_id", "kind", "source", "counts_cap", "counts_quota", "ref", "at")
    values = {c: bindparam(c, type_=_table.c[c].type) for c in columns}
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    return make(_table).values(values).on_conflict_do_nothing(index_elements=["ref"])


async def record_touch(
    session: AsyncSession,
    corp_id: str,
    recipient_type: str,
    recipient_id: str,
    *,
    kind: str,
    source: str,
    ref: str,
    at: datetime,
    counts_cap: bool = True,
    counts_quota: bool = False,
) -> bool:
    """Add one touch (idempotent by ``ref``); False when it was already recorded."""
    conn = await session.connection()
    values = {
        "corp_id": corp_id,
        "recipient_type": recipient_type,
        "recipient_id": recipient_id,
        "kind": kind,
        "source": source,
        "counts_cap": counts_cap,
        "counts_quota": counts_quota,
        "ref": ref,
        "at": at,
    }
    result = await conn.execute(_insert(conn.dialect.name), values)
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class TouchCounts:
    today: int
    week: int
    quota_used: int


async def count_touches(
    session: AsyncSession, policy: Policy, corp_id: str, recipient_type: str, recipient_id: str, at: datetime
) -> TouchCounts:
    """Touches counting towards the caps today and this week, and group sends in the current quota period."""
    found = await count_touches_many(session, policy, corp_id, recipient_type, [recipient_id], at)
    return found.get(recipient_id, TouchCounts(0, 0, 0))


BULK_CHUNK = 900  # recipients per IN (...) list: below SQLite's 999 bound parameters


async def count_touches_many(
    session: AsyncSession,
    policy: Policy,
    corp_id: str,
    recipient_type: str,
    recipient_ids: list[str],
    at: datetime,
) -> dict[str, TouchCounts]:
    """:func:`count_touches` for many recipients in a few grouped queries (campaign planning); recipients with
    no touch are absent from the result."""
    day, week, quota = policy.day_window(at), policy.week_window(at), policy.quota_window(at)
    start = min(day[0], week[0], quota[0])
    end = max(day[1], week[1], quota[1])
    t = _table.c

    def window(bounds: tuple[datetime, datetime], flag: Any) -> Any:
        return func.coalesce(func.sum(case(((t.at >= bounds[0]) & (t.at < bounds[1]) & flag, 1), else_=0)), 0)

    conn = await session.connection()
    found: dict[str, TouchCounts] = {}
    for offset in range(0, len(recipient_ids), BULK_CHUNK):
        chunk = recipient_ids[offset : offset + BULK_CHUNK]
        query = (
            select(t.recipient_id, window(day, t.counts_cap), window(week, t.counts_cap), window(quota, t.counts_quota))
            .where(
                t.corp_id == corp_id,
                t.recipient_type == recipient_type,
                t.recipient_id.in_(chunk),
                t.at >= start,
                t.at < end,
            )
            .group_by(t.recipient_id)
        )
        for row in (await conn.execute(query)).all():
            found[str(row[0])] = TouchCounts(int(row[1]), int(row[2]), int(row[3]))
    return found


async def record_touches(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add many touches at once (each a dict of :func:`record_touch`'s columns); refs already recorded are kept."""
    if not rows:
        return
    conn = await session.connection()
    await conn.execute(_insert(conn.dialect.name), rows)
