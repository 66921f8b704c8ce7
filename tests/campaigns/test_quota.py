"""Quota arithmetic: WeCom's group-send quota and the per-contact caps, from the policy windows (China time) to
the planner's skip reasons, and WeCom's own quota refusing what Lianyi's ledger did not know about."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from bot.emulator.groupmsg_records import RECIPIENT_SENT, GroupSendQuota, QuotaMode
from scrm.contact_policy import Caps, Policy, QuietHours
from scrm.contact_policy import GroupSendQuota as QuotaPolicy
from scrm.db import SessionFactory, transaction
from scrm.models import Contact, FollowRelation, Staff, TargetStatus
from scrm.rows import ensure_corp
from scrm.touches import TouchCounts, count_touches, count_touches_many, record_touches
from tests.campaigns.support import FRIDAY_7PM, CampaignWorld, campaign_world, group_spec, spec
from tests.conftest import TEST_CORP_ID

MODES = ("days_in_month", "4_per_month", "7_per_week", "1_per_day")
_refs = itertools.count()


def policy(mode: str = "days_in_month", *, per_day: int = 0, per_week: int = 0) -> Policy:
    return Policy(
        quiet_hours=QuietHours(start="00:00", end="00:00"),
        caps=Caps(per_day=per_day, per_week=per_week),
        group_send_quota=QuotaPolicy(mode=mode),
    )


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ---- pure arithmetic -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "days"),
    [
        (utc(2026, 2, 14, 4), 28),
        (utc(2028, 2, 14, 4), 29),  # leap year
        (utc(2026, 4, 14, 4), 30),
        (utc(2026, 1, 14, 4), 31),
        (utc(2026, 12, 14, 4), 31),
        (utc(2026, 1, 31, 15, 59, 59), 31),  # 2026-01-31 23:59:59 in China
        (utc(2026, 1, 31, 16), 28),  # 2026-02-01 00:00 in China
        (utc(2028, 2, 29, 16), 31),  # 2028-03-01 00:00 in China
    ],
)
def test_quota_limit_per_mode(at: datetime, days: int) -> None:
    assert policy("days_in_month").quota_limit(at) == days
    assert policy("4_per_month").quota_limit(at) == 4
    assert policy("7_per_week").quota_limit(at) == 7
    assert policy("1_per_day").quota_limit(at) == 1


def test_month_windows_are_as_long_as_the_month_allows_sends() -> None:
    """For days_in_month the window is exactly ``limit`` local days, for every month of three years."""
    for year, month in itertools.product((2026, 2027, 2028), range(1, 13)):
        at = utc(year, month, 10, 4)
        start, end = policy("days_in_month").quota_window(at)
        assert start.astimezone(UTC).hour == 16 and start.day in (28, 29, 30, 31)  # local midnight, day before
        assert end - start == timedelta(days=policy("days_in_month").quota_limit(at))
        assert policy("4_per_month").quota_window(at) == (start, end)


@pytest.mark.parametrize(
    ("mode", "at", "window"),
    [
        ("days_in_month", utc(2026, 2, 10), (utc(2026, 1, 31, 16), utc(2026, 2, 28, 16))),
        ("days_in_month", utc(2028, 2, 10), (utc(2028, 1, 31, 16), utc(2028, 2, 29, 16))),
        ("4_per_month", utc(2026, 12, 31, 15, 59), (utc(2026, 11, 30, 16), utc(2026, 12, 31, 16))),
        ("4_per_month", utc(2026, 12, 31, 16), (utc(2026, 12, 31, 16), utc(2027, 1, 31, 16))),  # Jan 1 local
        ("1_per_day", FRIDAY_7PM, (utc(2026, 12, 3, 16), utc(2026, 12, 4, 16))),
        ("1_per_day", utc(2026, 12, 4, 16), (utc(2026, 12, 4, 16), utc(2026, 12, 5, 16))),  # Sat 00:00 local
        # Mon 2026-11-30 .. Sun 2026-12-06, across the month end
        ("7_per_week", utc(2026, 11, 29, 16), (utc(2026, 11, 29, 16), utc(2026, 12, 6, 16))),
        ("7_per_week", utc(2026, 12, 2, 4), (utc(2026, 11, 29, 16), utc(2026, 12, 6, 16))),
        ("7_per_week", utc(2026, 12, 6, 15, 59, 59), (utc(2026, 11, 29, 16), utc(2026, 12, 6, 16))),
        ("7_per_week", utc(2026, 12, 6, 16), (utc(2026, 12, 6, 16), utc(2026, 12, 13, 16))),
        ("7_per_week", utc(2026, 11, 29, 15, 59, 59), (utc(2026, 11, 22, 16), utc(2026, 11, 29, 16))),
    ],
)
def test_quota_windows_in_china_time(mode: str, at: datetime, window: tuple[datetime, datetime]) -> None:
    assert policy(mode).quota_window(at) == window
    assert window[0] <= at < window[1]


async def test_count_touches_many_agrees_with_count_touches(session_factory: SessionFactory) -> None:
    rule = policy("days_in_month")
    at = utc(2026, 12, 2, 4)  # Wednesday noon: week from Mon 11-30, quota month from 12-01 (local)
    moments = [
        utc(2026, 11, 29, 15, 59, 59),  # k=0: Sunday before the week
        utc(2026, 11, 29, 16),  # k=1: Monday 00:00 local (this week, November)
        utc(2026, 11, 30, 16),  # k=2: December 1st 00:00 local
        utc(2026, 12, 1, 16),  # k=3: today 00:00 local
        utc(2026, 12, 2, 3, 59),  # k=4: today 11:59 local
        utc(2026, 12, 6, 16),  # k=5: next week, still December
    ]
    rows: list[dict[str, Any]] = []
    recipients = [f"wm{n:04d}" for n in range(950)]  # more than one IN (...) chunk
    for n, recipient in enumerate(recipients):
        for k, moment in enumerate(moments):
            if (n + k) % 3 == 0:
                rows.append(touch(recipient, moment, counts_cap=k % 2 == 0, counts_quota=k % 3 != 1))
    rows.append(touch("wm0001", at, recipient_type="group"))  # another recipient type
    rows.append({**touch("wm0002", at), "corp_id": "other-corp"})
    async with transaction(session_factory) as session:
        await record_touches(session, rows)
    async with session_factory() as session:
        many = await count_touches_many(session, rule, TEST_CORP_ID, "contact", [*recipients, "nobody"], at)
        for recipient in [*recipients[:40], recipients[-1], "nobody"]:
            one = await count_touches(session, rule, TEST_CORP_ID, "contact", recipient, at)
            assert many.get(recipient, TouchCounts(0, 0, 0)) == one
    assert "nobody" not in many and len(many) == 950
    # worked by hand: (today, week, quota_used)
    assert many["wm0000"] == TouchCounts(0, 0, 1)  # k=0 before everything, k=3 quota only
    assert many["wm0001"] == TouchCounts(0, 1, 2)  # k=2 cap + quota, k=5 quota (next week, same month)
    assert many["wm0002"] == TouchCounts(1, 1, 0)  # k=1 and k=4 count no quota; k=4 is today


def touch(
    recipient: str,
    at: datetime,
    *,
    recipient_type: str = "contact",
    kind: str = "private_message",
    source: str = "sop",
    counts_cap: bool = True,
    counts_quota: bool = True,
) -> dict[str, Any]:
    return {
        "corp_id": TEST_CORP_ID,
        "recipient_type": recipient_type,
        "recipient_id": recipient,
        "kind": kind,
        "source": source,
        "counts_cap": counts_cap,
        "counts_quota": counts_quota,
        "ref": f"test:{next(_refs)}",
        "at": at,
    }


async def add_touches(world: CampaignWorld, rows: list[dict[str, Any]]) -> None:
    async with transaction(world.sessions) as session:
        await record_touches(session, rows)


def status_of(targets: list[Any]) -> dict[str, tuple[str, str]]:
    return {t.target_id: (t.status, t.reason) for t in targets}


# ---- the planner: group campaigns ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_groups_at_their_quota_are_skipped(session_factory: SessionFactory, mode: str) -> None:
    rule = policy(mode)  # on_limit: defer (the default) — the planner still skips, with the reason "quota"
    start, _ = rule.quota_window(FRIDAY_7PM)
    limit = rule.quota_limit(FRIDAY_7PM)
    async with campaign_world(session_factory) as world:
        world.policy = rule
        await world.seed_groups(owners=1, groups_per_owner=5)
        full, short, early, sop_full, not_quota = world.chats["owner0000"]

        def group_touches(chat: str, n: int, at: datetime, **flags: Any) -> list[dict[str, Any]]:
            return [touch(chat, at, recipient_type="group", kind="group_message", **flags) for _ in range(n)]

        await add_touches(
            world,
            [
                *group_touches(full, limit, start, source="campaign"),  # the first instant of the window counts
                *group_touches(short, limit - 1, FRIDAY_7PM - timedelta(minutes=1), source="campaign"),
                *group_touches(early, limit - 1, start),
                *group_touches(early, 1, start - timedelta(seconds=1)),  # one second before: not counted
                *group_touches(sop_full, limit, start + timedelta(hours=1), source="sop"),
                *group_touches(not_quota, limit, start, counts_quota=False),
            ],
        )
        await world.save(group_spec())
        [run] = await world.plan()
        assert (run.targets, run.skipped, run.batches) == (5, 2, 1)
        skipped = (TargetStatus.SKIPPED.value, "quota")
        planned = (TargetStatus.PLANNED.value, "")
        assert status_of(await world.targets()) == {
            full: skipped,
            short: planned,
            early: planned,
            sop_full: skipped,
            not_quota: planned,
        }
        await world.dispatch_until_idle()
        assert sorted(world.state.group_send_coverage("group")) == sorted([short, early, not_quota])


async def test_a_campaign_run_counts_against_the_next_one(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        world.policy = policy("1_per_day")
        await world.seed_groups(owners=2, groups_per_owner=3)
        await world.save(group_spec("first"))
        [first] = await world.plan()
        assert (first.targets, first.skipped, first.batches) == (6, 0, 2)
        world.clock.set(utc(2026, 12, 4, 15, 59, 59))  # 23:59:59 the same local day
        await world.save(group_spec("second"))
        [second] = await world.plan()
        assert (second.status, second.skipped, second.batches, second.note) == ("skipped", 6, 0, "所有目标都被跳过")
        world.clock.set(utc(2026, 12, 4, 16))  # 00:00 the next local day
        await world.save(group_spec("third"))
        [third] = await world.plan()
        assert (third.status, third.skipped, third.batches) == ("sending", 0, 2)
        by_run = Counter((t.run_id, t.status, t.reason) for t in await world.targets())
        assert by_run == {
            (first.id, "planned", ""): 6,
            (second.id, "skipped", "quota"): 6,
            (third.id, "planned", ""): 6,
        }


# ---- the planner: 1v1 campaigns --------------------------------------------------------------------------


async def seed_contacts(world: CampaignWorld, userid: str, count: int, *, prefix: str = "") -> list[str]:
    """Staff member ``userid`` with ``count`` customers (live follow relations), in the emulator and the DB."""
    state, now = world.state, world.clock.utcnow()
    if userid not in state.staff:
        state.add_staff(userid, f"顾问{userid}")
    ids = [
        state.add_contact(userid, f"wm{prefix}{n:06d}", name=f"客户{n}", welcome=False)["ExternalUserID"]
        for n in range(count)
    ]
    contacts = [
        Contact(corp_id=TEST_CORP_ID, external_userid=e, name=f"客户{n}", created_at=now, updated_at=now)
        for n, e in enumerate(ids)
    ]
    relations = [
        FollowRelation(corp_id=TEST_CORP_ID, external_userid=e, userid=userid, added_at=now, updated_at=now)
        for e in ids
    ]
    async with transaction(world.sessions) as session:
        await ensure_corp(session, TEST_CORP_ID)
        session.add(Staff(corp_id=TEST_CORP_ID, userid=userid, name=f"顾问{userid}"))
        await session.flush()
        conn = await session.connection()
        tables = [
            (Contact.__table__, [c.model_dump(exclude={"id"}) for c in contacts]),  # type: ignore[attr-defined]
            (FollowRelation.__table__, [r.model_dump(exclude={"id"}) for r in relations]),  # type: ignore[attr-defined]
        ]
        for table, values in tables:
            for offset in range(0, len(values), 2000):
                await conn.execute(insert(table), values[offset : offset + 2000])
    return ids


SINGLE = """\
code: {code}
name: 一对一试驾邀约
chat_type: single
content:
  text: "您好，{{{{ staff.name }}}}邀请您周末试驾"  # one text for all: one batch per sender
schedule: {{now: true}}
"""


async def test_contacts_over_their_caps_are_skipped(session_factory: SessionFactory) -> None:
    monday, sunday_before = utc(2026, 11, 29, 17), utc(2026, 11, 29, 15)  # local Mon 01:00 / Sun 23:00
    today = FRIDAY_7PM - timedelta(hours=2)
    async with campaign_world(session_factory) as world:
        world.policy = policy("days_in_month", per_day=2, per_week=5)
        day, week, both, last_week, free, quota = await seed_contacts(world, "adv0001", 6)
        await add_touches(
            world,
            [
                *(touch(day, today, counts_quota=False) for _ in range(2)),
                *(touch(week, monday + timedelta(days=d), counts_quota=False) for d in range(5)),
                *(touch(both, today, counts_quota=False) for _ in range(2)),
                *(touch(both, monday, counts_quota=False) for _ in range(3)),
                *(touch(last_week, sunday_before, counts_quota=False) for _ in range(5)),
                touch(free, today),
                *(touch(quota, utc(2026, 11, 30, 16) + timedelta(hours=h), counts_cap=False) for h in range(31)),
            ],
        )
        await world.save(spec(SINGLE.format(code="invite")))
        [run] = await world.plan()
        assert status_of(await world.targets()) == {
            day: ("skipped", "cap_day"),
            week: ("skipped", "cap_week"),
            both: ("skipped", "cap_week"),  # the limit that frees last
            last_week: ("planned", ""),
            free: ("planned", ""),
            quota: ("skipped", "quota"),
        }
        [batch] = await world.batches()
        assert (batch.sender, batch.chat_type, batch.target_count) == ("adv0001", "single", 2)
        await world.dispatch_until_idle()
        coverage = world.state.group_send_coverage("single")
        assert sorted(coverage) == sorted([last_week, free]) and all(len(m) == 1 for m in coverage.values())
        # the run's own sends count against the caps now: a second invite today finds `free` at its day cap
        await world.save(spec(SINGLE.format(code="again")))
        await world.plan()
        again = {t.target_id: t.reason for t in await world.targets() if t.run_id != run.id}
        assert again[free] == "cap_day" and again[last_week] == ""


# ---- WeCom's own quota -----------------------------------------------------------------------------------


async def test_wecom_refuses_a_group_over_its_quota_that_lianyi_did_not_know(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        world.state.groupmsg_quota = GroupSendQuota(QuotaMode.ONE_PER_DAY)
        await world.seed_groups(owners=1, groups_per_owner=3)
        outside, *others = world.chats["owner0000"]
        sent = await world.client.add_msg_template(  # another tool posts to one group, outside Lianyi
            {"chat_type": "group", "sender": "owner0000", "chat_id_list": [outside], "text": {"content": "别处的群发"}}
        )
        result = await world.client.get_groupmsg_send_result(sent["msgid"], "owner0000")
        assert [(r["chat_id"], r["status"]) for r in result["send_list"]] == [(outside, RECIPIENT_SENT)]
        await world.save(group_spec())
        [run] = await world.plan()
        assert (run.targets, run.skipped) == (3, 0)  # Lianyi's ledger is empty: it plans every group
        await world.dispatch_until_idle()
        await world.track()
        await world.advance(61)
        await world.track()
        assert status_of(await world.targets()) == {
            outside: (TargetStatus.QUOTA_HIT.value, ""),
            **{chat: (TargetStatus.SENT.value, "") for chat in others},
        }
        delivered = Counter(d.recipient for d in world.state.counters.group_sends)
        assert delivered == {outside: 1, **dict.fromkeys(others, 1)}
