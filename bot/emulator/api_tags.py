"""Corp-tag APIs: get_corp_tag_list, add_corp_tag, edit_corp_tag, del_corp_tag (no callbacks)."""

from __future__ import annotations

from typing import Any

from bot.emulator.base import WorldError
from bot.emulator.records import CorpTag, TagGroup
from bot.emulator.routes import ApiCall, ApiError, route


def _tag_json(tag: CorpTag) -> dict[str, Any]:
    return {"id": tag.id, "name": tag.name, "create_time": tag.create_time, "order": tag.order, "deleted": False}


def _group_json(group: TagGroup, tags: list[CorpTag]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "group_id": group.group_id,
        "group_name": group.name,
        "create_time": group.create_time,
        "order": group.order,
        "deleted": False,
        "tag": [_tag_json(t) for t in tags],
    }
    if group.strategy_id is not None:
        data["strategy_id"] = group.strategy_id
    return data


@route("externalcontact/get_corp_tag_list", "POST", contact_api=True)
def get_corp_tag_list(call: ApiCall) -> dict[str, Any]:
    state = call.state
    tag_ids, group_ids = call.str_list("tag_id"), call.str_list("group_id")
    result = []
    for group in state.tag_groups.values():
        tags = list(group.tags.values())
        if tag_ids:  # tag_id wins over group_id, as documented
            tags = [t for t in tags if t.id in tag_ids]
            if not tags:
                continue
        elif group_ids and group.group_id not in group_ids:
            continue
        result.append(_group_json(group, tags))
    return {"tag_group": result}


@route("externalcontact/add_corp_tag", "POST", contact_api=True)
def add_corp_tag(call: ApiCall) -> dict[str, Any]:
    state = call.state
    raw_tags = call.arg("tag", [])
    if (
        not isinstance(raw_tags, list)
        or not raw_tags
        or not all(isinstance(t, dict) and t.get("name") for t in raw_tags)
    ):
        raise ApiError(40058, "tag must be a non-empty list of {name, order}")
    group_id = call.text("group_id", required=False)
    if group_id:
        group = state.tag_groups.get(group_id)
        if group is None:
            raise ApiError(40068, f"unknown tag group {group_id}")
    else:
        name = call.text("group_name")
        group = state.put_tag_group(name, order=call.int_arg("order", 0))
    existing = {t.name for t in group.tags.values()}
    if any(str(t["name"]) in existing for t in raw_tags):
        raise ApiError(40071)
    if sum(1 for _ in state.all_tags()) + len(raw_tags) > state.max_corp_tags:
        raise ApiError(40126)
    try:
        created = [state.put_tag(group.group_id, str(t["name"]), order=int(t.get("order", 0))) for t in raw_tags]
    except WorldError as exc:
        raise ApiError(40058, str(exc)) from None
    return {"tag_group": _group_json(group, created)}


@route("externalcontact/edit_corp_tag", "POST", contact_api=True)
def edit_corp_tag(call: ApiCall) -> dict[str, Any]:
    item_id = call.text("id")
    name = call.text("name", required=False) or None
    order = call.int_arg("order", 0) if "order" in call.body else None
    try:
        call.state.edit_tag_or_group(item_id, name=name, order=order)
    except WorldError:
        raise ApiError(40068, f"unknown tag or group {item_id}") from None
    return {}


@route("externalcontact/del_corp_tag", "POST", contact_api=True)
def del_corp_tag(call: ApiCall) -> dict[str, Any]:
    state = call.state
    tag_ids, group_ids = call.str_list("tag_id"), call.str_list("group_id")
    if not tag_ids and not group_ids:
        raise ApiError(40058, "tag_id and group_id cannot both be empty")
    unknown = [t for t in tag_ids if state.find_tag(t) is None] + [g for g in group_ids if g not in state.tag_groups]
    if unknown:
        raise ApiError(40068, f"unknown ids {unknown}")
    state.remove_tags(tag_ids, group_ids)
    return {}
