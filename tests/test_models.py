from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import select

from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, transaction
from scrm.models import Contact, Corp, OutboxCommand


async def test_utc_datetimes_round_trip(session_factory: SessionFactory) -> None:
    when = datetime(2026, 1, 31, 23, 59, 58, tzinfo=UTC)
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id="c1"))
        await s.flush()
        s.add(Contact(corp_id="c1", external_userid="wm1", name="张三", created_at=when))
    async with session_factory() as s:
        got = (await s.exec(select(Contact))).one()
    assert got.created_at == when and got.created_at.tzinfo is not None
    assert got.name == "张三"


async def test_enqueue_is_idempotent_by_key(session_factory: SessionFactory) -> None:
    async with transaction(session_factory) as s:
        first = await enqueue(s, corp_id="c1", kind=CommandKind.FETCH_CONTACT, key="k1", payload={"a": 1})
        second = await enqueue(s, corp_id="c1", kind=CommandKind.FETCH_CONTACT, key="k1", payload={"a": 2})
    assert (first, second) == (True, False)
    async with session_factory() as s:
        rows = (await s.exec(select(OutboxCommand))).all()
    assert [r.payload for r in rows] == [{"a": 1}]
