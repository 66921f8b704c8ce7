"""World actions return WeCom's callback fields; the API reflects them; API changes raise no callback."""

from __future__ import annotations

import pytest

from bot.edge.events import (
    ContactAdded,
    ContactDeletedByStaff,
    ContactEdited,
    GroupCreated,
    GroupDismissed,
    GroupUpdated,
    StaffDeletedByContact,
    TagCreated,
    TagDeleted,
    TagShuffled,
    TagUpdated,
    TransferFailed,
    parse_event,
)
from bot.emulator.state import EmulatorState, WorldError
from tests.emulator.conftest import Api


def _tag_ids(state: EmulatorState) -> list[str]:
    return [t.id for t in state.all_tags()]


def test_contact_actions_produce_the_documented_callbacks(state: EmulatorState) -> None:
    added = parse_event(state.add_contact("zhangwei", "wmX", "刘女士", "L1~q~BJ001~zhangwei"))
    assert isinstance(added, ContactAdded)
    assert (added.userid, added.external_userid, added.state) == ("zhangwei", "wmX", "L1~q~BJ001~zhangwei")
    assert added.welcome_code and added.fields["FromUserName"] == "sys"
    tag = _tag_ids(state)[0]
    assert isinstance(parse_event(state.mark_tags_in_client("zhangwei", "wmX", add=[tag])), ContactEdited)
    assert isinstance(parse_event(state.edit_remark("zhangwei", "wmX", remark="刘女士-SUV")), ContactEdited)
    assert state.follows[("wmX", "zhangwei")].tag_ids == [tag]
    state.add_contact("wangfang", "wmX")
    deleted = parse_event(state.staff_delete_contact("zhangwei", "wmX", source="DELETE_BY_TRANSFER"))
    assert isinstance(deleted, ContactDeletedByStaff) and deleted.source == "DELETE_BY_TRANSFER"
    assert isinstance(parse_event(state.contact_deletes_staff("wangfang", "wmX")), StaffDeletedByContact)
    assert not state.follows_of_contact("wmX") and not state.follows_of_staff("wangfang")
    failed = parse_event(state.transfer_fail("wangfang", "wmX", "customer_limit_exceed"))
    assert isinstance(failed, TransferFailed) and failed.fail_reason == "customer_limit_exceed"
    with pytest.raises(WorldError):
        state.edit_remark("zhangwei", "wmX", remark="gone")
    with pytest.raises(WorldError):
        state.add_contact("kefu", "wmY")  # no customer-contact permission
    with pytest.raises(WorldError):
        state.add_contact("zhangwei", "wmZ")
        state.mark_tags_in_client("zhangwei", "wmZ", add=["etNOPE"])


def test_group_actions_move_member_version(state: EmulatorState) -> None:
    created = parse_event(state.create_group("zhangwei", "朝阳车主群", ["wmA"], chat_id="wrG"))
    assert isinstance(created, GroupCreated) and created.chat_id == "wrG"
    v1 = state.groups["wrG"].member_version
    joined = parse_event(state.join_group("wrG", ["wmB", "wangfang"], 1))
    assert isinstance(joined, GroupUpdated)
    assert (joined.update_detail, joined.join_scene, joined.mem_change_cnt) == ("add_member", 0, 2)
    assert joined.last_mem_ver == v1 and joined.cur_mem_ver == state.groups["wrG"].member_version != v1
    left = parse_event(state.leave_group("wrG", ["wmA"], quit_scene=1))
    assert isinstance(left, GroupUpdated) and left.quit_scene == 1 and left.last_mem_ver == joined.cur_mem_ver
    with pytest.raises(WorldError):
        state.leave_group("wrG", ["zhangwei"])  # the owner must hand over first
    owner = parse_event(state.change_owner("wrG", "wangfang"))
    assert isinstance(owner, GroupUpdated) and owner.update_detail == "change_owner"
    version = state.groups["wrG"].member_version
    state.rename_group("wrG", "新名字")
    assert state.groups["wrG"].member_version == version  # only member changes move it
    assert isinstance(parse_event(state.dismiss_group("wrG")), GroupDismissed)
    with pytest.raises(WorldError):
        state.join_group("wrG", ["wmC"])


def test_admin_tag_actions_produce_tag_callbacks(state: EmulatorState) -> None:
    created = parse_event(state.create_tag_group("活动标签", ["试驾会"], strategy_id=5))
    assert isinstance(created, TagCreated) and created.tag_type == "tag_group" and created.strategy_id == 5
    group_id = created.tag_id
    tag = parse_event(state.create_tag(group_id, "车展"))
    assert isinstance(tag, TagCreated) and tag.tag_type == "tag" and tag.strategy_id == 5
    renamed = parse_event(state.update_tag(tag.tag_id, name="北京车展"))
    assert isinstance(renamed, TagUpdated) and state.find_tag(tag.tag_id) is not None
    shuffled = parse_event(state.shuffle_tags(group_id))
    assert isinstance(shuffled, TagShuffled) and shuffled.tag_id == group_id
    state.add_contact("zhangwei", "wmT")
    state.mark_tags_in_client("zhangwei", "wmT", add=[tag.tag_id])
    gone = parse_event(state.delete_tag(tag.tag_id))
    assert isinstance(gone, TagDeleted) and gone.tag_type == "tag"
    assert state.follows[("wmT", "zhangwei")].tag_ids == []
    dropped = parse_event(state.delete_tag(group_id))
    assert isinstance(dropped, TagDeleted) and dropped.tag_type == "tag_group"
    assert group_id not in state.tag_groups


async def test_mark_tag_and_remark_through_the_api(api: Api, state: EmulatorState) -> None:
    state.add_contact("zhangwei", "wmM", "马先生")
    suv, sedan = _tag_ids(state)[:2]
    body = {"userid": "zhangwei", "external_userid": "wmM", "add_tag": [suv, sedan], "remove_tag": []}
    assert (await api.call("externalcontact/mark_tag", body))["errcode"] == 0
    assert (await api.call("externalcontact/mark_tag", {**body, "add_tag": ["etBAD"]}))["errcode"] == 40068
    assert (await api.call("externalcontact/mark_tag", {**body, "userid": "wangfang"}))["errcode"] == 84061
    assert state.counters.mark_tag_calls == 1
    remark = {"userid": "zhangwei", "external_userid": "wmM", "remark": "马先生-置换", "description": "开了5年"}
    assert (await api.call("externalcontact/remark", remark))["errcode"] == 0
    detail = await api.call("externalcontact/get", external_userid="wmM")
    follow = detail["follow_user"][0]
    assert follow["remark"] == "马先生-置换" and follow["description"] == "开了5年"
    assert sorted(t["tag_id"] for t in follow["tags"]) == sorted([suv, sedan])
    assert {t["group_name"] for t in follow["tags"]} == {"意向车型"}


async def test_corp_tag_api(api: Api, state: EmulatorState) -> None:
    added = await api.call(
        "externalcontact/add_corp_tag", {"group_name": "到店", "tag": [{"name": "首次"}, {"name": "复访"}]}
    )
    assert added["errcode"] == 0 and [t["name"] for t in added["tag_group"]["tag"]] == ["首次", "复访"]
    group_id = added["tag_group"]["group_id"]
    dup = {"group_id": group_id, "tag": [{"name": "首次"}]}
    assert (await api.call("externalcontact/add_corp_tag", dup))["errcode"] == 40071
    first = added["tag_group"]["tag"][0]["id"]
    assert (await api.call("externalcontact/edit_corp_tag", {"id": first, "name": "首访"}))["errcode"] == 0
    assert (await api.call("externalcontact/edit_corp_tag", {"id": "etNOPE", "name": "x"}))["errcode"] == 40068
    listed = await api.call("externalcontact/get_corp_tag_list", {"group_id": [group_id]})
    assert [t["name"] for t in listed["tag_group"][0]["tag"]] == ["首访", "复访"]
    everything = await api.call("externalcontact/get_corp_tag_list", {})
    assert len(everything["tag_group"]) == 2
    assert (await api.call("externalcontact/del_corp_tag", {"tag_id": [first]}))["errcode"] == 0
    assert (await api.call("externalcontact/del_corp_tag", {"group_id": ["etNOPE"]}))["errcode"] == 40068
    second = added["tag_group"]["tag"][1]["id"]
    await api.call("externalcontact/del_corp_tag", {"tag_id": [second]})
    assert group_id not in state.tag_groups  # the last tag took its group with it


async def test_groupchat_get_reflects_the_world(api: Api, state: EmulatorState) -> None:
    state.add_contact("zhangwei", "wmA", "阿强")
    chat = state.create_group("zhangwei", "品鉴群", ["wmA"], notice="欢迎")["ChatId"]
    state.join_group(chat, ["wmB"], 3, state="L1~q~BJ001", names={"wmB": "小美"})
    got = (await api.call("externalcontact/groupchat/get", {"chat_id": chat, "need_name": 1}))["group_chat"]
    assert got["owner"] == "zhangwei" and got["notice"] == "欢迎"
    members = {m["userid"]: m for m in got["member_list"]}
    assert members["zhangwei"]["type"] == 1 and members["wmA"]["type"] == 2
    assert members["wmA"]["name"] == "阿强" and members["wmB"]["name"] == "小美"
    assert members["wmB"]["join_scene"] == 3 and members["wmB"]["state"] == "L1~q~BJ001"
    assert got["member_version"] == state.groups[chat].member_version
    nameless = (await api.call("externalcontact/groupchat/get", {"chat_id": chat}))["group_chat"]
    assert "name" not in nameless["member_list"][0]
    state.dismiss_group(chat)
    assert (await api.call("externalcontact/groupchat/get", {"chat_id": chat}))["errcode"] == 40050


async def test_add_contact_way(api: Api, state: EmulatorState) -> None:
    ok = await api.call(
        "externalcontact/add_contact_way", {"type": 1, "scene": 2, "state": "L1~q~BJ001~zhangwei", "user": ["zhangwei"]}
    )
    assert ok["errcode"] == 0 and ok["qr_code"].startswith("https://")
    assert state.contact_ways[ok["config_id"]].state == "L1~q~BJ001~zhangwei"
    long_state = {"type": 1, "scene": 2, "state": "x" * 31, "user": ["zhangwei"]}
    assert (await api.call("externalcontact/add_contact_way", long_state))["errcode"] == 40058
    no_perm = {"type": 1, "scene": 2, "state": "s", "user": ["kefu"]}
    assert (await api.call("externalcontact/add_contact_way", no_perm))["errcode"] == 40003
