"""The corp tag mirror (callbacks → refresh, full list → mirror) and staff from full sync."""

from __future__ import annotations

from typing import Any

from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import ContactTag, Staff, Tag, TagGroup
from scrm.sync import staff, tags
from tests.sync.helpers import CORP, T0, commands, dump, rows


def _tag_list(*, drop_tag: str = "", drop_group: str = "", deleted_tag: str = "") -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = [
        {
            "group_id": "g-intent",
            "group_name": "购车意向",
            "create_time": int(T0.timestamp()),
            "order": 2,
            "tag": [
                {"id": "t-h", "name": "H级", "create_time": int(T0.timestamp()), "order": 3},
                {"id": "t-a", "name": "A级", "create_time": int(T0.timestamp()), "order": 2},
            ],
        },
        {
            "group_id": "g-model",
            "group_name": "关注车型",
            "create_time": int(T0.timestamp()),
            "order": 1,
            "tag": [{"id": "t-suv", "name": "SUV", "create_time": int(T0.timestamp()), "order": 1}],
        },
    ]
    for group in groups:
        group["tag"] = [t for t in group["tag"] if t["id"] != drop_tag]
        for tag in group["tag"]:
            tag["deleted"] = tag["id"] == deleted_tag
    return [g for g in groups if g["group_id"] != drop_group]


async def _apply(factory: SessionFactory, groups: list[dict[str, Any]]) -> None:
    async with transaction(factory) as s:
        await tags.apply_corp_tag_list(s, CORP, groups)


async def _mark(factory: SessionFactory, *tag_ids: str) -> None:
    async with transaction(factory) as s:
        for tag_id in tag_ids:
            s.add(ContactTag(corp_id=CORP, external_userid="wmA", userid="zhangsan", tag_id=tag_id))


async def test_tag_events_enqueue_one_refresh_each(session_factory: SessionFactory) -> None:
    events = [
        ("create", "tag", "t-new"),
        ("update", "tag_group", "g-model"),
        ("delete", "tag", "t-a"),
        ("shuffle", "", ""),
    ]
    for _ in range(2):
        for change_type, tag_type, tag_id in events:
            async with transaction(session_factory) as s:
                await tags.on_tag_changed(
                    s, CORP, change_type=change_type, tag_type=tag_type, tag_id=tag_id, event_time=T0
                )
    refreshes = await commands(session_factory, CommandKind.REFRESH_CORP_TAGS)
    assert len(refreshes) == 4
    assert all(c.payload == {} for c in refreshes)


async def test_tag_list_mirror_with_deletions(session_factory: SessionFactory) -> None:
    await _apply(session_factory, _tag_list())
    assert sorted((t.tag_id, t.group_id, t.name, t.deleted) for t in await rows(session_factory, Tag)) == [
        ("t-a", "g-intent", "A级", False),
        ("t-h", "g-intent", "H级", False),
        ("t-suv", "g-model", "SUV", False),
    ]
    before = await dump(session_factory)
    await _apply(session_factory, _tag_list())
    assert await dump(session_factory) == before

    await _mark(session_factory, "t-a", "t-h", "t-suv")
    await _apply(session_factory, _tag_list(drop_tag="t-a", drop_group="g-model"))
    state = {t.tag_id: t.deleted for t in await rows(session_factory, Tag)}
    assert state == {"t-a": True, "t-h": False, "t-suv": True}
    assert {g.group_id: g.deleted for g in await rows(session_factory, TagGroup)} == {
        "g-intent": False,
        "g-model": True,
    }
    assert [t.tag_id for t in await rows(session_factory, ContactTag)] == ["t-h"]


async def test_tag_flagged_deleted_in_list(session_factory: SessionFactory) -> None:
    await _apply(session_factory, _tag_list())
    await _mark(session_factory, "t-suv")
    await _apply(session_factory, _tag_list(deleted_tag="t-suv"))
    assert {t.tag_id: t.deleted for t in await rows(session_factory, Tag)}["t-suv"] is True
    assert await rows(session_factory, ContactTag) == []
    await _apply(session_factory, _tag_list())  # recreated with the same id: live again
    assert {t.tag_id: t.deleted for t in await rows(session_factory, Tag)}["t-suv"] is False


async def test_rule_group_tags_survive_refresh(session_factory: SessionFactory) -> None:
    await _apply(session_factory, _tag_list())
    async with transaction(session_factory) as s:
        s.add(TagGroup(corp_id=CORP, group_id="g-rule", name="规则组", strategy_id=7))
        s.add(Tag(corp_id=CORP, tag_id="t-rule", group_id="g-rule", name="门店A", strategy_id=7))
    await _apply(session_factory, _tag_list())
    assert {t.tag_id: t.deleted for t in await rows(session_factory, Tag)}["t-rule"] is False


async def test_staff_follow_list_and_user_detail(session_factory: SessionFactory) -> None:
    async with transaction(session_factory) as s:
        await staff.apply_follow_user_list(s, CORP, ["zhangsan", "lisi"])
        await staff.apply_user(s, CORP, {"userid": "zhangsan", "name": "张三", "status": 1})
        await staff.apply_user(s, CORP, {"userid": "lisi", "name": "李四", "status": 5})
    members = {m.userid: m for m in await rows(session_factory, Staff)}
    assert (members["zhangsan"].name, members["zhangsan"].active) == ("张三", True)
    assert (members["lisi"].name, members["lisi"].active) == ("李四", False)
    before = await dump(session_factory)
    async with transaction(session_factory) as s:
        await staff.apply_follow_user_list(s, CORP, ["zhangsan", "lisi"])
        await staff.apply_user(s, CORP, {"userid": "zhangsan", "name": "张三", "status": 1})
    assert await dump(session_factory) == before
    async with transaction(session_factory) as s:
        await staff.apply_follow_user_list(s, CORP, ["zhangsan"])
    members = {m.userid: m for m in await rows(session_factory, Staff)}
    assert members["lisi"].has_contact_permission is False and members["zhangsan"].has_contact_permission
