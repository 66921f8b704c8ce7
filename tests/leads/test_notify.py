"""Staff notifications: one card, or one digest when several wait; never more messages per member than the
per-minute and per-hour budgets, whatever the burst; nothing lost; repeated flushes send nothing twice."""

from __future__ import annotations

from datetime import timedelta

from scrm.db import SessionFactory, write_transaction
from scrm.leads.notify import flush_notifications, notify_staff, truncate_bytes
from scrm.leads.rules import NotifyLimits
from tests.leads.routing_world import CORP, app_messages, cn, notifications

T0 = cn(23, 10)
DIGEST_URL = "https://scrm.example.com/leads"


async def note(factory: SessionFactory, userid: str, n: int, at: object = T0) -> bool:
    async with write_transaction(factory) as session:
        return await notify_staff(
            session,
            corp_id=CORP,
            userid=userid,
            key=f"k{userid}{n}",
            kind="new_lead",
            title=f"新线索：客户{n}",
            description=f"客户说：第 {n} 条",
            url=f"https://scrm.example.com/leads/{n}",
            now=at,  # type: ignore[arg-type]
        )


async def flush(factory: SessionFactory, at: object, limits: NotifyLimits | None = None) -> int:
    return await flush_notifications(factory, CORP, limits or NotifyLimits(), now=at, digest_url=DIGEST_URL)  # type: ignore[arg-type]


async def test_one_card_or_one_digest(session_factory: SessionFactory) -> None:
    assert await note(session_factory, "a", 1)
    assert not await note(session_factory, "a", 1)  # same key: queued once
    assert await flush(session_factory, T0) == 1
    await note(session_factory, "a", 2)
    await note(session_factory, "a", 3)
    await note(session_factory, "b", 4)
    assert await flush(session_factory, T0 + timedelta(seconds=2)) == 2
    assert await flush(session_factory, T0 + timedelta(seconds=4)) == 0
    cards = [(c.payload["touser"], c.payload["textcard"]) for c in await app_messages(session_factory)]
    assert cards[0] == (
        "a",
        {
            "title": "新线索：客户1",
            "description": "客户说：第 1 条",
            "url": "https://scrm.example.com/leads/1",
            "btntxt": "查看",
        },
    )
    assert cards[1][0] == "a" and cards[1][1]["title"] == "您有 2 条线索消息待处理"
    assert cards[1][1]["description"] == "· 新线索：客户2\n· 新线索：客户3" and cards[1][1]["url"] == DIGEST_URL
    assert cards[2][0] == "b" and cards[2][1]["title"] == "新线索：客户4"
    assert {n.status for n in await notifications(session_factory)} == {"sent"}


async def test_a_burst_never_exceeds_the_per_minute_budget_and_loses_nothing(session_factory: SessionFactory) -> None:
    limits = NotifyLimits(per_minute=5, per_hour=600, digest_after=3)
    sent_at = []
    for second in range(0, 240, 2):  # a new notification every 2 s for 4 minutes, a flush every 2 s
        at = T0 + timedelta(seconds=second)
        await note(session_factory, "a", second, at)
        if await flush(session_factory, at, limits):
            sent_at.append(at)
    for second in range(240, 600, 2):
        at = T0 + timedelta(seconds=second)
        if await flush(session_factory, at, limits):
            sent_at.append(at)
    for i, start in enumerate(sent_at):
        in_window = [t for t in sent_at[i:] if t - start < timedelta(minutes=1)]
        assert len(in_window) <= 5
    notes = await notifications(session_factory, "a")
    assert len(notes) == 120 and {n.status for n in notes} == {"sent"}
    assert len({n.batch_key for n in notes}) == len(sent_at) == len(await app_messages(session_factory))
    assert len(sent_at) < 120  # digests carried the rest


async def test_the_hour_budget_holds_messages_until_the_hour_has_passed(session_factory: SessionFactory) -> None:
    limits = NotifyLimits(per_minute=30, per_hour=2, digest_after=2)
    await note(session_factory, "a", 1)
    assert await flush(session_factory, T0, limits) == 1
    await note(session_factory, "a", 2, T0 + timedelta(minutes=5))
    assert await flush(session_factory, T0 + timedelta(minutes=5), limits) == 1
    await note(session_factory, "a", 3, T0 + timedelta(minutes=6))
    assert await flush(session_factory, T0 + timedelta(minutes=6), limits) == 0
    assert await flush(session_factory, T0 + timedelta(minutes=59, seconds=59), limits) == 0
    assert await flush(session_factory, T0 + timedelta(minutes=60), limits) == 1


def test_truncation_counts_utf8_bytes() -> None:
    assert truncate_bytes("线索" * 100, 512).encode() <= b"\xff" * 512
    assert len(truncate_bytes("线索" * 100, 512).encode()) <= 512
    assert truncate_bytes("短", 512) == "短"
    assert truncate_bytes("线索线索", 9).endswith("…")
