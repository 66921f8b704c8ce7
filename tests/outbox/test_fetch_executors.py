"""Fetch commands: the dispatcher pulls WeCom data and the scrm sync services mirror it into our tables."""

from __future__ import annotations

import aiohttp
from sqlmodel import col, select

from scrm.commands import CommandKind
from scrm.db import SessionFactory
from scrm.models import CommandStatus, Contact, CustomerGroup, FollowRelation, GroupMember, Tag, TagGroup
from tests.conftest import TEST_CORP_ID
from tests.outbox.support import add_command, commands_by_key, drain, make_dispatcher
from tests.wecom.backends import Backend
from tests.wecom.fake_api import EXT, FakeClock, RunningFake

CREATED = 1_700_000_000


async def test_fetch_contact_pages_follow_users_and_mirrors_them(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.contacts["wmA"] = {
        "external_contact": {"external_userid": "wmA", "name": "王先生", "type": 1, "gender": 1},
        "follow_user": [
            {"userid": f"advisor{i}", "remark": f"备注{i}", "createtime": CREATED + i, "tags": [], "state": ""}
            for i in range(3)
        ],
    }
    await add_command(session_factory, clock, CommandKind.FETCH_CONTACT, "fetch:wmA", {"external_userid": "wmA"})
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )

    command = (await commands_by_key(session_factory))["fetch:wmA"]
    assert command.status == CommandStatus.DONE
    assert command.result == {"external_userid": "wmA", "follow_users": 3}
    cursors = [r.params.get("cursor") for r in fake_wecom.state.requests if r.path == f"{EXT}/get"]
    assert cursors == [None, "2"]  # two pages of at most two follow users
    async with session_factory() as session:
        contact = (await session.exec(select(Contact).where(col(Contact.external_userid) == "wmA"))).one()
        relations = (await session.exec(select(FollowRelation).order_by(col(FollowRelation.userid)))).all()
    assert (contact.corp_id, contact.name) == (TEST_CORP_ID, "王先生")
    assert [(r.userid, r.remark) for r in relations] == [(f"advisor{i}", f"备注{i}") for i in range(3)]


async def test_fetch_contact_without_relationship_fails(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    await add_command(session_factory, clock, CommandKind.FETCH_CONTACT, "fetch:gone", {"external_userid": "gone"})
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    command = (await commands_by_key(session_factory))["fetch:gone"]
    assert (command.status, command.last_errcode) == (CommandStatus.FAILED, 84061)


async def test_fetch_group_mirrors_the_group_and_its_members(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.groups["wrChat1"] = {
        "chat_id": "wrChat1",
        "name": "试驾车主群",
        "owner": "zhangsan",
        "create_time": CREATED,
        "notice": "",
        "member_list": [
            {"userid": "zhangsan", "type": 1, "join_time": CREATED, "join_scene": 1},
            {"userid": "wmA", "type": 2, "join_time": CREATED + 5, "join_scene": 3, "invitor": {"userid": "zhangsan"}},
        ],
        "admin_list": [],
        "member_version": "v7",
    }
    await add_command(session_factory, clock, CommandKind.FETCH_GROUP, "group:wrChat1", {"chat_id": "wrChat1"})
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )

    command = (await commands_by_key(session_factory))["group:wrChat1"]
    assert command.status == CommandStatus.DONE
    assert command.result == {"chat_id": "wrChat1", "members": 2, "member_version": "v7"}
    assert fake_wecom.state.requests[-1].body == {"chat_id": "wrChat1", "need_name": 1}
    async with session_factory() as session:
        group = (await session.exec(select(CustomerGroup))).one()
        members = (await session.exec(select(GroupMember).order_by(col(GroupMember.member_id)))).all()
    assert (group.chat_id, group.name, group.member_version) == ("wrChat1", "试驾车主群", "v7")
    assert [(m.member_id, m.member_type) for m in members] == [("wmA", 2), ("zhangsan", 1)]


async def test_refresh_corp_tags_mirrors_the_tag_list(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.tag_groups = [
        {
            "group_id": "etG1",
            "group_name": "购车意向",
            "create_time": CREATED,
            "order": 1,
            "tag": [
                {"id": "etH", "name": "H级", "create_time": CREATED, "order": 2},
                {"id": "etA", "name": "A级", "create_time": CREATED, "order": 1},
            ],
        }
    ]
    await add_command(session_factory, clock, CommandKind.REFRESH_CORP_TAGS, "tags:refresh", {})
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )

    command = (await commands_by_key(session_factory))["tags:refresh"]
    assert (command.status, command.result) == (CommandStatus.DONE, {"tag_groups": 1, "tags": 2})
    async with session_factory() as session:
        group = (await session.exec(select(TagGroup))).one()
        tags = (await session.exec(select(Tag).order_by(col(Tag.tag_id)))).all()
    assert (group.group_id, group.name) == ("etG1", "购车意向")
    assert [(t.tag_id, t.name, t.group_id) for t in tags] == [("etA", "A级", "etG1"), ("etH", "H级", "etG1")]
