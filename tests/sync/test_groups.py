"""Customer group callbacks and groupchat/get on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import AuditLog, Corp, CustomerGroup, Dealer, GroupMember, Staff
from scrm.sync import groups
from tests.sync.helpers import CORP, T0, commands, dump, rows

CHAT = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA"


@pytest.fixture
async def seeded(session_factory: SessionFactory) -> SessionFactory:
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id=CORP))
        await s.flush()
        dealer = Dealer(corp_id=CORP, code="SH002", name="上海浦东4S店")
        s.add(dealer)
        await s.flush()
        s.add(Staff(corp_id=CORP, userid="owner1", name="李四", dealer_id=dealer.id))
    return session_factory


async def _update(factory: SessionFactory, detail: str, at: Any, **kw: Any) -> None:
    async with transaction(factory) as s:
        await groups.on_group_updated(
            s, CORP, chat_id=CHAT, update_detail=detail, event_time=at, refetch_delay=2.0, **kw
        )


async def _group(factory: SessionFactory) -> CustomerGroup:
    [group] = await rows(factory, CustomerGroup)
    return group


async def _active(factory: SessionFactory) -> set[str]:
    members = await rows(factory, GroupMember)
    return {m.member_id for m in members if m.left_at is None}


def _group_chat(members: list[str], version: str = "v10", **extra: Any) -> dict[str, Any]:
    return {
        "chat_id": CHAT,
        "name": "望京车友群",
        "owner": "owner1",
        "create_time": int(T0.timestamp()),
        "notice": "周六试驾会，欢迎报名",
        "member_list": [
            {
                "userid": m,
                "type": 2 if m.startswith("wm") else 1,
                "join_time": int(T0.timestamp()),
                "join_scene": 3,
                "invitor": {"userid": "owner1"},
                "name": f"name-{m}",
            }
            for m in members
        ],
        "admin_list": [],
        "member_version": version,
        **extra,
    }


async def _detail(factory: SessionFactory, data: dict[str, Any]) -> None:
    async with transaction(factory) as s:
        await groups.apply_group_detail(s, CORP, data)


async def test_created_enqueues_delayed_fetch_and_replay_is_noop(seeded: SessionFactory) -> None:
    for _ in range(2):
        async with transaction(seeded) as s:
            await groups.on_group_created(s, CORP, chat_id=CHAT, event_time=T0, refetch_delay=2.0)
    [fetch] = await commands(seeded, CommandKind.FETCH_GROUP)
    assert fetch.payload == {"chat_id": CHAT}
    assert fetch.not_before > fetch.created_at + timedelta(seconds=1.5)
    assert (await _group(seeded)).wecom_created_at == T0


async def test_member_diff_applies_add_and_del(seeded: SessionFactory) -> None:
    await _detail(seeded, _group_chat(["owner1", "wmA"], version="v1"))
    await _update(
        seeded,
        "add_member",
        T0 + timedelta(minutes=1),
        members=["wmB", "wmC"],
        join_scene=3,
        last_mem_ver="v1",
        cur_mem_ver="v2",
    )
    assert await _active(seeded) == {"owner1", "wmA", "wmB", "wmC"}
    [b] = [m for m in await rows(seeded, GroupMember) if m.member_id == "wmB"]
    assert (b.join_scene, b.member_type, b.join_time) == (3, 2, T0 + timedelta(minutes=1))
    await _update(
        seeded,
        "del_member",
        T0 + timedelta(minutes=2),
        members=["wmA"],
        quit_scene=1,
        last_mem_ver="v2",
        cur_mem_ver="v3",
    )
    assert await _active(seeded) == {"owner1", "wmB", "wmC"}
    [a] = [m for m in await rows(seeded, GroupMember) if m.member_id == "wmA"]
    assert (a.left_at, a.quit_scene) == (T0 + timedelta(minutes=2), 1)
    group = await _group(seeded)
    assert (group.member_version, group.member_count) == ("v3", 3)
    assert await commands(seeded, CommandKind.FETCH_GROUP) == []  # versions chained: nothing was lost


async def test_member_update_replay_changes_nothing(seeded: SessionFactory) -> None:
    await _detail(seeded, _group_chat(["owner1"], version="v1"))
    kw: dict[str, Any] = {"members": ["wmB"], "join_scene": 0, "last_mem_ver": "v1", "cur_mem_ver": "v2"}
    await _update(seeded, "add_member", T0 + timedelta(minutes=1), **kw)
    before = await dump(seeded)
    await _update(seeded, "add_member", T0 + timedelta(minutes=1), **kw)
    assert await dump(seeded) == before


async def test_version_mismatch_enqueues_fetch_and_stores_current(seeded: SessionFactory) -> None:
    await _detail(seeded, _group_chat(["owner1"], version="v1"))
    await _update(
        seeded,
        "add_member",
        T0 + timedelta(minutes=3),
        members=["wmD"],
        join_scene=3,
        last_mem_ver="v5",
        cur_mem_ver="v6",
    )
    [fetch] = await commands(seeded, CommandKind.FETCH_GROUP)
    assert fetch.idempotency_key == f"fetch_group:{CHAT}:version:v6"
    assert fetch.not_before > fetch.created_at
    group = await _group(seeded)
    assert group.member_version == "v6" and "wmD" in await _active(seeded)


async def test_out_of_order_join_and_leave(seeded: SessionFactory) -> None:
    await _detail(seeded, _group_chat(["owner1"], version="v1"))
    # wmE joined at +1 min and left at +2 min, but the leave callback arrives first
    await _update(
        seeded,
        "del_member",
        T0 + timedelta(minutes=2),
        members=["wmE"],
        quit_scene=0,
        last_mem_ver="v2",
        cur_mem_ver="v3",
    )
    await _update(
        seeded,
        "add_member",
        T0 + timedelta(minutes=1),
        members=["wmE"],
        join_scene=3,
        last_mem_ver="v1",
        cur_mem_ver="v2",
    )
    assert "wmE" not in await _active(seeded)
    [e] = [m for m in await rows(seeded, GroupMember) if m.member_id == "wmE"]
    assert e.left_at == T0 + timedelta(minutes=2)
    # the leave saw a version gap (v1 stored, v2 expected) and scheduled a refetch; the late join changes
    # nothing, not even the stored version (v3 stays)
    assert len(await commands(seeded, CommandKind.FETCH_GROUP)) == 1
    assert (await _group(seeded)).member_version == "v3"


async def test_rejoin_after_leave(seeded: SessionFactory) -> None:
    await _detail(seeded, _group_chat(["owner1", "wmA"], version="v1"))
    await _update(
        seeded,
        "del_member",
        T0 + timedelta(minutes=1),
        members=["wmA"],
        quit_scene=0,
        last_mem_ver="v1",
        cur_mem_ver="v2",
    )
    await _update(
        seeded,
        "add_member",
        T0 + timedelta(minutes=5),
        members=["wmA"],
        join_scene=0,
        last_mem_ver="v2",
        cur_mem_ver="v3",
    )
    [a] = [m for m in await rows(seeded, GroupMember) if m.member_id == "wmA"]
    assert (a.left_at, a.quit_scene, a.join_time, a.join_scene) == (None, None, T0 + timedelta(minutes=5), 0)


@pytest.mark.parametrize("detail", ["change_name", "change_owner", "change_notice"])
async def test_field_changes_enqueue_fetch(seeded: SessionFactory, detail: str) -> None:
    await _update(seeded, detail, T0)
    await _update(seeded, detail, T0)
    [fetch] = await commands(seeded, CommandKind.FETCH_GROUP)
    assert fetch.idempotency_key == f"fetch_group:{CHAT}:{detail}:{int(T0.timestamp())}"


async def test_dismissed_keeps_history_and_audits_once(seeded: SessionFactory) -> None:
    await _detail(seeded, _group_chat(["owner1", "wmA"]))
    for _ in range(2):
        async with transaction(seeded) as s:
            await groups.on_group_dismissed(s, CORP, chat_id=CHAT, event_time=T0 + timedelta(days=1))
    group = await _group(seeded)
    assert (group.status, group.dismissed_at) == ("dismissed", T0 + timedelta(days=1))
    assert await _active(seeded) == {"owner1", "wmA"}
    assert [e.action for e in await rows(seeded, AuditLog)] == ["group.dismissed"]


async def test_group_detail_mirrors_exactly(seeded: SessionFactory) -> None:
    await _update(seeded, "add_member", T0, members=["wmStale"], join_scene=3, last_mem_ver="", cur_mem_ver="v0")
    await _detail(seeded, _group_chat(["owner1", "wmA", "wmB"], version="v7"))
    group = await _group(seeded)
    assert (group.name, group.owner_userid, group.notice) == ("望京车友群", "owner1", "周六试驾会，欢迎报名")
    assert (group.member_version, group.member_count, group.wecom_created_at) == ("v7", 3, T0)
    [dealer] = await rows(seeded, Dealer)
    assert group.dealer_id == dealer.id
    assert await _active(seeded) == {"owner1", "wmA", "wmB"}
    members = {m.member_id: m for m in await rows(seeded, GroupMember)}
    assert members["wmStale"].left_at is not None
    assert (members["wmA"].invitor, members["wmA"].name, members["owner1"].member_type) == ("owner1", "name-wmA", 1)
    before = await dump(seeded)
    await _detail(seeded, _group_chat(["owner1", "wmA", "wmB"], version="v7"))
    assert await dump(seeded) == before
    await _detail(seeded, _group_chat(["owner1", "wmB", "wmStale"], version="v8"))
    assert await _active(seeded) == {"owner1", "wmB", "wmStale"}
    assert (await _group(seeded)).member_count == 3
