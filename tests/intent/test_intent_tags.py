"""Intent, level and stage as corp tags: one mark_tag only when the set changed, missing tags created."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlmodel import col, select

from bot.emulator.clock import ManualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.wecom.client import WeComClient, build_wecom_client
from scrm.db import SessionFactory, write_transaction
from scrm.intent.pipeline import on_behaviour
from scrm.models import CommandStatus, ContactTag, OutboxCommand, Tag, TagGroup
from scrm.sync.tags import apply_corp_tag_list
from tests.conftest import make_settings
from tests.domain_support import intent_for, process_services
from tests.intent.test_pipeline import RULES_YAML, START, make_contact, store
from tests.sop.support import CORP

SECRET = "intent-secret"
AGENT_ID = 1000003
GROUPS = {
    "意向标签": ["询价", "金融贷款", "试驾", "置换", "提车交付", "配置咨询", "购车意向", "售后", "投诉", "战败信号"],
    "意向等级": ["H级", "A级", "B级", "C级"],
    "客户阶段": ["潜客", "意向客户", "车主", "战败"],
}


@pytest.fixture
def sop_dir(tmp_path: Path) -> Path:
    (tmp_path / "intent.yaml").write_text(RULES_YAML, encoding="utf-8")
    return tmp_path


def tag_id(name: str) -> str:
    return f"et-{name}"


async def mirror_all_tags(factory: SessionFactory) -> None:
    groups = [
        {"group_id": f"eg-{group}", "group_name": group, "tag": [{"id": tag_id(n), "name": n} for n in names]}
        for group, names in GROUPS.items()
    ]
    groups.append({"group_id": "eg-car", "group_name": "车型", "tag": [{"id": "et-suv", "name": "SUV"}]})
    async with write_transaction(factory) as session:
        await apply_corp_tag_list(session, CORP, groups)


async def commands(factory: SessionFactory, kind: str) -> list[OutboxCommand]:
    async with factory() as session:
        rows = await session.exec(
            select(OutboxCommand).where(OutboxCommand.kind == kind).order_by(col(OutboxCommand.id))
        )
        return list(rows.all())


async def carried(factory: SessionFactory, external_userid: str = "wmA", userid: str = "zhangsan") -> set[str]:
    async with factory() as session:
        rows = await session.exec(
            select(ContactTag.tag_id).where(ContactTag.external_userid == external_userid, ContactTag.userid == userid)
        )
        return set(rows.all())


async def test_mark_tag_is_written_once_and_not_when_unchanged(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    await mirror_all_tags(session_factory)
    await store(session_factory, sop_dir, "m1", "落地价多少钱", at=START)
    (mark,) = await commands(session_factory, "mark_tag")
    wanted = sorted(tag_id(n) for n in ("询价", "C级", "潜客"))
    assert mark.payload == {"userid": "zhangsan", "external_userid": "wmA", "add_tag": wanted, "remove_tag": []}
    assert await carried(session_factory) == set(wanted)

    await store(session_factory, sop_dir, "m2", "到底多少钱呀", at=START + timedelta(hours=2))
    await store(session_factory, sop_dir, "m3", "哦", at=START + timedelta(hours=3))
    assert len(await commands(session_factory, "mark_tag")) == 1
    assert await commands(session_factory, "add_corp_tag") == []


async def test_a_level_and_stage_change_swaps_only_managed_tags(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    await mirror_all_tags(session_factory)
    async with write_transaction(session_factory) as session:
        session.add(ContactTag(corp_id=CORP, external_userid="wmA", userid="zhangsan", tag_id="et-suv"))
    await store(session_factory, sop_dir, "m1", "想定车，落地价多少钱", at=START)
    async with write_transaction(session_factory) as session:
        await on_behaviour(
            session,
            CORP,
            "wmA",
            kind="test_drive_booking",
            ref="form:9",
            at=START + timedelta(hours=1),
            intent=intent_for(sop_dir),
            hooks=process_services(sop_dir),
        )
    first, second = await commands(session_factory, "mark_tag")
    assert first.payload["add_tag"] == sorted(tag_id(n) for n in ("询价", "购车意向", "C级", "潜客"))
    assert (second.payload["add_tag"], second.payload["remove_tag"]) == (
        sorted([tag_id("A级"), tag_id("意向客户")]),
        sorted([tag_id("C级"), tag_id("潜客")]),
    )
    intents = {tag_id("询价"), tag_id("购车意向")}
    assert await carried(session_factory) == {"et-suv", *intents, tag_id("A级"), tag_id("意向客户")}


async def test_every_live_relation_gets_its_own_mark_tag(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory, staff=("lisi", "zhangsan"))
    await mirror_all_tags(session_factory)
    await store(session_factory, sop_dir, "m1", "能试驾吗", at=START)
    marks = await commands(session_factory, "mark_tag")
    assert sorted(m.payload["userid"] for m in marks) == ["lisi", "zhangsan"]
    assert len({m.idempotency_key for m in marks}) == 2
    assert await carried(session_factory, userid="lisi") == {tag_id(n) for n in ("试驾", "C级", "潜客")}


async def test_missing_tags_are_requested_once_per_group(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory, "wmA")
    await make_contact(session_factory, "wmB")
    await store(session_factory, sop_dir, "m1", "落地价多少钱", at=START, external_userid="wmA")
    await store(session_factory, sop_dir, "m2", "能试驾吗", at=START + timedelta(hours=1), external_userid="wmB")
    requests = await commands(session_factory, "add_corp_tag")
    assert {c.payload["group_name"]: [t["name"] for t in c.payload["tag"]] for c in requests} == GROUPS
    assert await commands(session_factory, "mark_tag") == []
    assert await carried(session_factory) == set()


# --- against the emulator: the add_corp_tag executor fills the mirror, then mark_tag reaches WeCom --------


@pytest.fixture
def world_clock() -> ManualClock:
    return ManualClock(start=datetime.now(UTC).timestamp())


@pytest.fixture
async def emulator(world_clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    state = EmulatorState(CORP, clock=world_clock, seed=7)
    state.add_app(SECRET, AGENT_ID)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("zhangsan", "张三", "BJ001")
    state.put_tag_group("意向等级", ["H级"])  # an operator made part of a group by hand
    running = await start_emulator(state)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def client(emulator: RunningEmulator, world_clock: ManualClock) -> AsyncIterator[WeComClient]:
    settings = make_settings(corp_id=CORP, wecom_api_base=emulator.base_url, app_secret=SECRET, agent_id=AGENT_ID)
    async with aiohttp.ClientSession() as http:
        yield build_wecom_client(settings, http, None, clock=world_clock.now)


async def dispatch(factory: SessionFactory, client: WeComClient, clock: ManualClock) -> None:
    clock.advance(60)  # commands are due from the wall-clock time they were written
    settings = make_settings(corp_id=CORP, outbox_max_attempts=3)
    dispatcher = OutboxDispatcher(
        factory, client, settings, instance_id="intent", clock=lambda: datetime.fromtimestamp(clock.now(), UTC)
    )
    while await dispatcher.run_once():
        pass


async def test_created_tags_are_mirrored_and_marked_in_wecom(
    session_factory: SessionFactory,
    sop_dir: Path,
    emulator: RunningEmulator,
    client: WeComClient,
    world_clock: ManualClock,
) -> None:
    state = emulator.state
    ext = state.add_contact("zhangsan", name="王先生")["ExternalUserID"]
    hand_made = next(t.id for g in state.tag_groups.values() for t in g.tags.values() if t.name == "H级")
    await make_contact(session_factory, ext)
    await store(session_factory, sop_dir, "m1", "落地价多少钱", at=START, external_userid=ext)
    await dispatch(session_factory, client, world_clock)

    requests = await commands(session_factory, "add_corp_tag")
    assert [c.status for c in requests] == [CommandStatus.DONE] * 3
    in_wecom = {g.name: sorted(t.name for t in g.tags.values()) for g in state.tag_groups.values()}
    assert in_wecom == {group: sorted(names) for group, names in GROUPS.items()}
    async with session_factory() as session:
        mirrored = (await session.exec(select(Tag.tag_id, Tag.name).where(col(Tag.deleted).is_(False)))).all()
        groups = (await session.exec(select(TagGroup.name))).all()
    wecom_ids = {t.name: t.id for g in state.tag_groups.values() for t in g.tags.values()}
    assert dict((name, tid) for tid, name in mirrored) == wecom_ids and wecom_ids["H级"] == hand_made
    assert sorted(groups) == sorted(GROUPS)

    await store(
        session_factory, sop_dir, "m2", "落地价还能优惠吗多少钱", at=START + timedelta(hours=1), external_userid=ext
    )
    await dispatch(session_factory, client, world_clock)
    (mark,) = await commands(session_factory, "mark_tag")
    assert mark.status == CommandStatus.DONE
    expected = {wecom_ids[n] for n in ("询价", "C级", "潜客")}
    assert set(state.follows[(ext, "zhangsan")].tag_ids) == expected == await carried(session_factory, ext)
    assert state.counters.mark_tag_calls == 1
