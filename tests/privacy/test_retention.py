"""Retention: message text older than LIANYI_MESSAGE_RETENTION_DAYS, and all message text of customers lost
LIANYI_LOST_CUSTOMER_RETENTION_DAYS ago, is blanked in bounded batches by the leader's tick; rows are kept,
the purge is idempotent. Both databases."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import select

from bot.runtime.privacy_wiring import retention_ticks
from scrm.db import SessionFactory, transaction
from scrm.db_types import utcnow
from scrm.models import Corp, FollowRelation, Message
from scrm.privacy.retention import purge_lost_customers, purge_old_messages
from tests.conftest import make_settings

CORP = "wwretentioncorp01"


async def _messages(factory: SessionFactory, external_userid: str, sent: list[datetime]) -> None:
    async with transaction(factory) as session:
        for n, at in enumerate(sent):
            msgid = f"{external_userid}-{n}"
            session.add(
                Message(corp_id=CORP, source="archive", msgid=msgid, external_userid=external_userid, text=f"说了{n}")
            )
            session.add(Message(corp_id=CORP, source="kf", msgid=msgid, external_userid=external_userid, sent_at=at))
        await session.flush()
        rows = (await session.exec(select(Message).where(Message.external_userid == external_userid))).all()
        for row in rows:
            row.text, row.payload, row.sent_at = (
                f"{row.msgid}的内容",
                {"content": "x"},
                sent[int(row.msgid.split("-")[-1])],
            )


async def _relations(factory: SessionFactory, external_userid: str, deleted: list[datetime | None]) -> None:
    async with transaction(factory) as session:
        for n, at in enumerate(deleted):
            row = FollowRelation(corp_id=CORP, external_userid=external_userid, userid=f"adv{n}", deleted_at=at)
            session.add(row)


async def _texts(factory: SessionFactory) -> dict[str, list[str]]:
    async with factory() as session:
        rows = (await session.exec(select(Message).order_by(Message.id))).all()  # type: ignore[arg-type]
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row.external_userid, []).append(row.text)
    return out


async def _corp(factory: SessionFactory) -> None:
    async with transaction(factory) as session:
        session.add(Corp(corp_id=CORP))


async def test_old_message_text_is_blanked_in_batches(session_factory: SessionFactory) -> None:
    await _corp(session_factory)
    now = utcnow()
    await _messages(session_factory, "wm_old", [now - timedelta(days=400 + n) for n in range(4)])
    await _messages(session_factory, "wm_new", [now - timedelta(days=10)])
    purged = await purge_old_messages(session_factory, CORP, sent_before=now - timedelta(days=365), batch_size=3)
    texts = await _texts(session_factory)
    assert purged == 8
    assert texts["wm_old"] == [""] * 8  # rows kept (counts add up), text gone
    assert texts["wm_new"] == ["wm_new-0的内容"] * 2
    again = await purge_old_messages(session_factory, CORP, sent_before=now - timedelta(days=365), batch_size=3)
    assert again == 0


async def test_a_batch_limit_leaves_the_rest_to_the_next_tick(session_factory: SessionFactory) -> None:
    await _corp(session_factory)
    now = utcnow()
    await _messages(session_factory, "wm_old", [now - timedelta(days=400 + n) for n in range(5)])
    cutoff = now - timedelta(days=365)
    first = await purge_old_messages(session_factory, CORP, sent_before=cutoff, batch_size=2, max_batches=2)
    second = await purge_old_messages(session_factory, CORP, sent_before=cutoff, batch_size=2, max_batches=2)
    third = await purge_old_messages(session_factory, CORP, sent_before=cutoff, batch_size=2, max_batches=2)
    assert (first, second, third) == (4, 4, 2)


async def test_lost_customers_lose_every_message_text(session_factory: SessionFactory) -> None:
    await _corp(session_factory)
    now = utcnow()
    recent = [now - timedelta(days=1)]
    await _messages(session_factory, "wm_lost", recent)  # deleted every staff member 40 days ago
    await _relations(session_factory, "wm_lost", [now - timedelta(days=40), now - timedelta(days=45)])
    await _messages(session_factory, "wm_half", recent)  # one relation still live
    await _relations(session_factory, "wm_half", [now - timedelta(days=40), None])
    await _messages(session_factory, "wm_lately", recent)  # lost 10 days ago only
    await _relations(session_factory, "wm_lately", [now - timedelta(days=10)])
    purged = await purge_lost_customers(session_factory, CORP, deleted_before=now - timedelta(days=30), batch_size=1)
    texts = await _texts(session_factory)
    assert purged == 2 and texts["wm_lost"] == ["", ""]
    assert "" not in texts["wm_half"] + texts["wm_lately"]
    assert await purge_lost_customers(session_factory, CORP, deleted_before=now - timedelta(days=30)) == 0


async def test_the_leader_tick_applies_both_settings(database_url: str, session_factory: SessionFactory) -> None:
    await _corp(session_factory)
    now = utcnow()
    await _messages(session_factory, "wm_old", [now - timedelta(days=40)])
    await _messages(session_factory, "wm_lost", [now - timedelta(days=1)])
    await _relations(session_factory, "wm_lost", [now - timedelta(days=8)])
    settings = make_settings(
        database_url=database_url, corp_id=CORP, message_retention_days=30, lost_customer_retention_days=7
    )
    ticks = retention_ticks(session_factory, settings)
    assert [t.name for t in ticks] == ["privacy_retention"]
    await ticks[0].run(now)
    texts = await _texts(session_factory)
    assert texts == {"wm_old": ["", ""], "wm_lost": ["", ""]}
    off = make_settings(database_url=database_url, message_retention_days=0, lost_customer_retention_days=0)
    assert retention_ticks(session_factory, off) == []
