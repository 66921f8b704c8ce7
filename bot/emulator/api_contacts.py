"""Staff and customer-contact APIs: user/get, get_follow_user_list, get, list, batch/get_by_user, remark,
mark_tag. API changes (remark, mark_tag) raise no callback (96361)."""

from __future__ import annotations

from typing import Any

from bot.emulator.records import ExternalContact, Follow
from bot.emulator.routes import ApiCall, ApiError, page, route
from bot.emulator.state import EmulatorState

BATCH_MAX_USERS = 100
BATCH_MAX_LIMIT = 100
BATCH_DEFAULT_LIMIT = 50


def contact_json(contact: ExternalContact) -> dict[str, Any]:
    return {
        "external_userid": contact.external_userid,
        "name": contact.name,
        "avatar": contact.avatar,
        "type": contact.type,
        "gender": contact.gender,
        "unionid": contact.unionid,
        "corp_name": contact.corp_name,
    }


def _follow_common(follow: Follow) -> dict[str, Any]:
    return {
        "userid": follow.userid,
        "remark": follow.remark,
        "description": follow.description,
        "createtime": follow.createtime,
        "remark_corp_name": "",
        "remark_mobiles": list(follow.remark_mobiles),
        "oper_userid": follow.oper_userid,
        "add_way": follow.add_way,
        "state": follow.state,
    }


def follow_user_json(state: EmulatorState, follow: Follow) -> dict[str, Any]:
    """An entry of externalcontact/get's ``follow_user`` (tags with names)."""
    data = _follow_common(follow)
    tags = []
    for tag_id in follow.tag_ids:
        tag = state.find_tag(tag_id)
        if tag is not None:
            group = state.tag_groups[tag.group_id]
            tags.append({"group_name": group.name, "tag_name": tag.name, "tag_id": tag.id, "type": 1})
    data["tags"] = tags
    return data


def follow_info_json(follow: Follow) -> dict[str, Any]:
    """batch/get_by_user's ``follow_info`` (tag ids only)."""
    data = _follow_common(follow)
    data["tag_id"] = list(follow.tag_ids)
    return data


@route("user/get", "GET")
def user_get(call: ApiCall) -> dict[str, Any]:
    member = call.state.staff.get(call.text("userid"))
    if member is None:
        raise ApiError(60111)
    return {
        "userid": member.userid,
        "name": member.name,
        "department": [1],
        "main_department": 1,
        "position": member.position,
        "status": 1,
        "extattr": {"attrs": [{"type": 0, "name": "经销商代码", "text": {"value": member.dealer_code}}]},
    }


@route("externalcontact/get_follow_user_list", "GET", contact_api=True)
def follow_user_list(call: ApiCall) -> dict[str, Any]:
    return {"follow_user": [s.userid for s in call.state.staff.values() if s.has_contact_permission]}


@route("externalcontact/get", "GET", contact_api=True)
def contact_get(call: ApiCall) -> dict[str, Any]:
    state = call.state
    contact = state.contacts.get(call.text("external_userid"))
    if contact is None:
        raise ApiError(40096)
    follows = state.follows_of_contact(contact.external_userid)
    if not follows:
        raise ApiError(84061)
    chunk, next_cursor = page(follows, str(call.arg("cursor", "") or ""), state.follow_page_size)
    return {
        "external_contact": contact_json(contact),
        "follow_user": [follow_user_json(state, f) for f in chunk],
        "next_cursor": next_cursor,
    }


@route("externalcontact/list", "GET", contact_api=True)
def contact_list(call: ApiCall) -> dict[str, Any]:
    member = call.state.staff.get(call.text("userid"))
    if member is None:
        raise ApiError(60111)
    if not member.has_contact_permission:
        raise ApiError(60011, f"{member.userid} has no customer-contact permission")
    return {"external_userid": [f.external_userid for f in call.state.follows_of_staff(member.userid)]}


@route("externalcontact/batch/get_by_user", "POST", contact_api=True)
def batch_get_by_user(call: ApiCall) -> dict[str, Any]:
    state = call.state
    userids = call.str_list("userid_list")
    if not userids or len(userids) > BATCH_MAX_USERS:
        raise ApiError(40058, f"userid_list must hold 1..{BATCH_MAX_USERS} userids, got {len(userids)}")
    unknown = [u for u in userids if u not in state.staff]
    if unknown:
        raise ApiError(60111, f"unknown userids {unknown}")
    limit = call.int_arg("limit", BATCH_DEFAULT_LIMIT)
    if limit < 0:
        raise ApiError(40058, "limit must be >= 0")
    limit = min(limit or BATCH_DEFAULT_LIMIT, BATCH_MAX_LIMIT)  # WeCom clamps a larger limit to the maximum
    pairs = [f for userid in dict.fromkeys(userids) for f in state.follows_of_staff(userid)]
    chunk, next_cursor = page(pairs, str(call.arg("cursor", "") or ""), limit)
    items = [
        {"external_contact": contact_json(state.contacts[f.external_userid]), "follow_info": follow_info_json(f)}
        for f in chunk
    ]
    return {"external_contact_list": items, "next_cursor": next_cursor}


@route("externalcontact/remark", "POST", contact_api=True)
def remark(call: ApiCall) -> dict[str, Any]:
    follow = call.state.follows.get((call.text("external_userid"), call.text("userid")))
    if follow is None:
        raise ApiError(84061)
    if "remark" in call.body:
        follow.remark = call.text("remark", required=False)
    if "description" in call.body:
        follow.description = call.text("description", required=False)
    if "remark_mobiles" in call.body:
        follow.remark_mobiles = call.str_list("remark_mobiles")
    return {}


@route("externalcontact/mark_tag", "POST", contact_api=True)
def mark_tag(call: ApiCall) -> dict[str, Any]:
    state = call.state
    follow = state.follows.get((call.text("external_userid"), call.text("userid")))
    if follow is None:
        raise ApiError(84061)
    add, remove = call.str_list("add_tag"), call.str_list("remove_tag")
    if not add and not remove:
        raise ApiError(40058, "add_tag and remove_tag cannot both be empty")
    bad = [t for t in (*add, *remove) if state.find_tag(t) is None]
    if bad:
        raise ApiError(40068, f"unknown tags {bad}")
    follow.tag_ids = [t for t in follow.tag_ids if t not in set(remove)]
    follow.tag_ids.extend(t for t in add if t not in follow.tag_ids)
    state.counters.mark_tag_calls += 1
    return {}
