"""Customer-group APIs: groupchat/list (paged, filters) and groupchat/get (members, member_version)."""

from __future__ import annotations

from typing import Any

from bot.emulator.records import Group, GroupMember
from bot.emulator.routes import ApiCall, ApiError, page, route

LIST_MAX_LIMIT = 1000


@route("externalcontact/groupchat/list", "POST", contact_api=True)
def groupchat_list(call: ApiCall) -> dict[str, Any]:
    status_filter = call.int_arg("status_filter", 0)
    if status_filter not in (0, 1, 2, 3):
        raise ApiError(40058, "status_filter must be 0..3")
    limit = call.int_arg("limit", 0)
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise ApiError(40058, f"limit must be 1..{LIST_MAX_LIMIT}, got {limit}")
    owner_filter = call.arg("owner_filter") or {}
    owners = owner_filter.get("userid_list", []) if isinstance(owner_filter, dict) else []
    groups = [g for g in call.state.groups.values() if not g.dismissed and (not owners or g.owner in owners)]
    # Ownership-transfer states (1 离职待继承, 2 继承中, 3 继承完成) never occur here: all groups are status 0.
    if status_filter:
        groups = []
    chunk, next_cursor = page(groups, str(call.arg("cursor", "") or ""), limit)
    return {"group_chat_list": [{"chat_id": g.chat_id, "status": 0} for g in chunk], "next_cursor": next_cursor}


def _member_json(call: ApiCall, member: GroupMember, need_name: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "userid": member.userid,
        "type": member.type,
        "join_time": member.join_time,
        "join_scene": member.join_scene,
        "group_nickname": member.group_nickname,
    }
    if member.invitor:
        data["invitor"] = {"userid": member.invitor}
    if member.state:
        data["state"] = member.state
    if need_name:
        data["name"] = member.name
    if member.type == 2:
        contact = call.state.contacts.get(member.userid)
        if contact is not None and contact.unionid:
            data["unionid"] = contact.unionid
    return data


def group_json(call: ApiCall, group: Group, need_name: bool) -> dict[str, Any]:
    return {
        "chat_id": group.chat_id,
        "name": group.name,
        "owner": group.owner,
        "create_time": group.create_time,
        "notice": group.notice,
        "member_list": [_member_json(call, m, need_name) for m in group.members.values()],
        "admin_list": [{"userid": a} for a in group.admins],
        "member_version": group.member_version,
    }


@route("externalcontact/groupchat/get", "POST", contact_api=True)
def groupchat_get(call: ApiCall) -> dict[str, Any]:
    group = call.state.groups.get(call.text("chat_id"))
    if group is None or group.dismissed:
        raise ApiError(40050)
    return {"group_chat": group_json(call, group, bool(call.int_arg("need_name", 0)))}
