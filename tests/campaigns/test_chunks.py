"""Chunk boundaries (≤ 2,000 chat ids or ≤ 10,000 external userids per add_msg_template call) and deterministic
batches: the same world always gives the same batch keys, senders and recipient lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, update
from sqlmodel import col, select

from scrm.campaigns.planner import MAX_CHAT_IDS, MAX_EXTERNAL_USERIDS, batch_limit, build_plan, chunk
from scrm.campaigns.service import get_campaign, save_campaign, spec_of
from scrm.db import SessionFactory, make_engine, make_session_factory, transaction
from scrm.models import CustomerGroup, Dealer, OutboxCommand, Staff
from scrm.rows import ensure_corp
from tests.campaigns.support import FRIDAY_7PM, OPEN_POLICY, CampaignWorld, campaign_world, group_spec, spec
from tests.campaigns.test_quota import seed_contacts
from tests.conftest import TEST_CORP_ID, create_sqlite_database
from tests.users_support import add_accounts


def test_batch_limits() -> None:
    assert (batch_limit("group"), batch_limit("single")) == (MAX_CHAT_IDS, MAX_EXTERNAL_USERIDS) == (2_000, 10_000)


@pytest.mark.parametrize(("count", "sizes"), [(9_999, [9_999]), (10_000, [10_000]), (10_001, [10_000, 1])])
def test_chunk_external_userids(count: int, sizes: list[int]) -> None:
    ids = [f"wm{n:06d}" for n in range(count)]
    chunks = chunk(ids, batch_limit("single"))
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == ids  # consecutive, in order, nothing lost or repeated


def test_chunk_edges() -> None:
    assert chunk([], 2_000) == []
    assert chunk(["a", "b", "c"], 1) == [["a"], ["b"], ["c"]]
    with pytest.raises(ValueError, match="at least 1"):
        chunk(["a"], 0)


async def send_all(world: CampaignWorld) -> None:
    """Plan, create every task at the emulator, and let the batches learn their msgid."""
    await world.save(group_spec())
    [run] = await world.plan()
    assert run.status == "sending"
    await world.dispatch_until_idle()
    await world.track()


@pytest.mark.parametrize(("groups", "sizes"), [(1_999, [1_999]), (2_000, [2_000]), (2_001, [2_000, 1])])
async def test_one_owner_group_boundaries(session_factory: SessionFactory, groups: int, sizes: list[int]) -> None:
    async with campaign_world(session_factory) as world:
        await world.seed_groups(owners=1, groups_per_owner=groups, members=0)
        await send_all(world)
        batches = await world.batches()
        assert [(b.sender, b.target_count) for b in batches] == [("owner0000", n) for n in sizes]
        chats = sorted(world.chats["owner0000"])
        per_batch = [[t.target_id for t in await world.targets() if t.batch_no == b.batch_no] for b in batches]
        assert per_batch == [chats[:2_000], chats[2_000:]][: len(sizes)]  # chat_id order, first batch full
        state = world.state
        coverage = state.group_send_coverage("group")
        assert sorted(coverage) == chats and all(len(msgids) == 1 for msgids in coverage.values())
        tasks = state.group_msgs_by_creator()
        assert list(tasks) == ["owner0000"] and len(tasks["owner0000"]) == len(sizes)
        assert [b.msgid for b in batches] == tasks["owner0000"]
        assert [len(state.group_msgs[m].recipients) for m in tasks["owner0000"]] == sizes


SINGLE = """\
code: invite
name: 一对一试驾邀约
chat_type: single
content:
  text: "您好，{{ staff.name }}邀请您本周末到店试驾"
schedule: {now: true}
"""


async def test_one_staff_member_with_10001_contacts(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        ids = await seed_contacts(world, "adv0001", 10_001)
        await world.save(spec(SINGLE))
        [run] = await world.plan()
        assert (run.targets, run.skipped, run.batches) == (10_001, 0, 2)
        await world.dispatch_until_idle()
        await world.track()
        batches = await world.batches()
        assert [(b.sender, b.chat_type, b.target_count) for b in batches] == [
            ("adv0001", "single", 10_000),
            ("adv0001", "single", 1),
        ]
        state = world.state
        coverage = state.group_send_coverage("single")
        assert sorted(coverage) == sorted(ids) and all(len(msgids) == 1 for msgids in coverage.values())
        tasks = state.group_msgs_by_creator()
        assert [b.msgid for b in batches] == tasks["adv0001"] and list(tasks) == ["adv0001"]
        assert [len(state.group_msgs[m].recipients) for m in tasks["adv0001"]] == [10_000, 1]


# ---- determinism -----------------------------------------------------------------------------------------


Shape = list[tuple[int, str, str, str, list[str]]]


async def plan_shape(sessions: SessionFactory, code: str) -> Shape:
    """The dry-run plan (build_plan writes nothing) as (batch_no, key, sender, fingerprint, recipients)."""
    async with sessions() as session:
        campaign = await get_campaign(session, TEST_CORP_ID, code)
        plan = await build_plan(
            session,
            campaign,
            spec_of(campaign),
            slot="now",
            now=FRIDAY_7PM,
            policy=OPEN_POLICY,
            calls_per_minute=3_000,
        )
    return [(b.batch_no, b.key, b.sender, b.fingerprint, b.recipients) for b in plan.batches]


async def copy_world_reversed(source: SessionFactory, target: SessionFactory) -> None:
    """The same dealers, staff and groups in ``target``, inserted in the reverse order (other row ids)."""
    async with source() as session:
        dealers = list((await session.exec(select(Dealer).order_by(col(Dealer.id)))).all())
        staff = list((await session.exec(select(Staff).order_by(col(Staff.id)))).all())
        groups = list((await session.exec(select(CustomerGroup).order_by(col(CustomerGroup.id)))).all())
    async with transaction(target) as session:
        await ensure_corp(session, TEST_CORP_ID)
        dealer_ids: dict[int | None, int | None] = {None: None}
        for dealer in reversed(dealers):
            copy = Dealer(**dealer.model_dump(exclude={"id"}))
            session.add(copy)
            await session.flush()
            dealer_ids[dealer.id] = copy.id
        for member in reversed(staff):
            session.add(Staff(**{**member.model_dump(exclude={"id"}), "dealer_id": dealer_ids[member.dealer_id]}))
        await session.flush()
        rows = [{**g.model_dump(exclude={"id"}), "dealer_id": dealer_ids[g.dealer_id]} for g in reversed(groups)]
        conn = await session.connection()
        await conn.execute(insert(CustomerGroup.__table__), rows)  # type: ignore[attr-defined]


async def test_batch_keys_are_deterministic(session_factory: SessionFactory, tmp_path: Path) -> None:
    async with campaign_world(session_factory) as world:
        await world.seed_groups(owners=4, groups_per_owner=5, dealers=3)
        async with transaction(world.sessions) as session:  # some groups belong to another dealer than their owner
            d002 = (await session.exec(select(Dealer).where(Dealer.code == "D002"))).one()
            odd = [c for chats in world.chats.values() for c in chats if int(c[-1]) % 2]
            await session.exec(
                update(CustomerGroup).where(col(CustomerGroup.chat_id).in_(odd)).values(dealer_id=d002.id)
            )
        await world.save(group_spec())
        first = await plan_shape(world.sessions, "friday")
        assert await plan_shape(world.sessions, "friday") == first
        # 4 senders; owners 0 and 1 have groups of two dealers, owner 2 is D002's own
        assert [(no, sender) for no, _, sender, _, _ in first] == list(
            enumerate(["owner0000", "owner0000", "owner0001", "owner0001", "owner0002", "owner0003", "owner0003"])
        )
        assert [key for _, key, _, _, _ in first] == [f"campaign:1:now:{n}" for n in range(7)]
        assert sorted(c for *_, recipients in first for c in recipients) == sorted(
            c for chats in world.chats.values() for c in chats
        )

        # a second database with the same world inserted backwards plans the same batches
        engine = make_engine(await create_sqlite_database(tmp_path / "second.db"))
        try:
            second = make_session_factory(engine)
            await copy_world_reversed(world.sessions, second)
            await add_accounts(second)
            async with transaction(second) as session:
                await save_campaign(session, TEST_CORP_ID, group_spec(), by="operator1", now=FRIDAY_7PM)
            assert await plan_shape(second, "friday") == first
        finally:
            await engine.dispose()

        # and the real run writes exactly the dry run's batches and commands
        await world.plan()
        batches = await world.batches()
        assert [(b.batch_no, b.key, b.sender, b.fingerprint) for b in batches] == [s[:4] for s in first]
        async with world.sessions() as session:
            commands = {c.idempotency_key: c.payload for c in (await session.exec(select(OutboxCommand))).all()}
        assert [(commands[key]["sender"], commands[key]["chat_id_list"]) for _, key, _, _, _ in first] == [
            (sender, recipients) for _, _, sender, _, recipients in first
        ]
