"""Cursor paging over more items than one page, and the documented limits."""

from __future__ import annotations

from typing import Any

from bot.emulator.state import EmulatorState
from tests.emulator.conftest import Api


async def _pages(api: Api, path: str, body: dict[str, Any], key: str) -> list[list[Any]]:
    pages: list[list[Any]] = []
    cursor = ""
    while True:
        result = await api.call(path, {**body, "cursor": cursor})
        assert result["errcode"] == 0, result
        pages.append(result[key])
        cursor = result["next_cursor"]
        if not cursor:
            return pages


async def test_batch_get_by_user_pages_over_limit(api: Api, state: EmulatorState) -> None:
    for n in range(130):
        state.add_contact("zhangwei" if n % 2 else "wangfang", name=f"客户{n}", state="L1~q~BJ001")
    pages = await _pages(
        api,
        "externalcontact/batch/get_by_user",
        {"userid_list": ["zhangwei", "wangfang"], "limit": 50},
        "external_contact_list",
    )
    assert [len(p) for p in pages] == [50, 50, 30]
    pairs = {(i["follow_info"]["userid"], i["external_contact"]["external_userid"]) for p in pages for i in p}
    assert pairs == set((uid, ext) for ext, uid in state.follows)
    clamped = await api.call(
        "externalcontact/batch/get_by_user", {"userid_list": ["zhangwei", "wangfang"], "limit": 500}
    )
    assert len(clamped["external_contact_list"]) == 100 and clamped["next_cursor"]


async def test_batch_get_by_user_violations(api: Api) -> None:
    too_many = {"userid_list": [f"u{n}" for n in range(101)]}
    assert (await api.call("externalcontact/batch/get_by_user", too_many))["errcode"] == 40058
    assert (await api.call("externalcontact/batch/get_by_user", {"userid_list": []}))["errcode"] == 40058
    assert (await api.call("externalcontact/batch/get_by_user", {"userid_list": ["ghost"]}))["errcode"] == 60111
    bad_cursor = {"userid_list": ["zhangwei"], "cursor": "garbage!"}
    assert (await api.call("externalcontact/batch/get_by_user", bad_cursor))["errcode"] == 40058


async def test_get_pages_follow_user(api: Api, state: EmulatorState) -> None:
    state.follow_page_size = 2
    for n in range(5):
        state.add_staff(f"adv{n}", f"顾问{n}", "BJ001")
        state.add_contact(f"adv{n}", "wmCUSTOMER", name="老王")
    first = await api.call("externalcontact/get", external_userid="wmCUSTOMER")
    seen = [f["userid"] for f in first["follow_user"]]
    cursor = first["next_cursor"]
    while cursor:
        page = await api.call("externalcontact/get", external_userid="wmCUSTOMER", cursor=cursor)
        seen += [f["userid"] for f in page["follow_user"]]
        cursor = page["next_cursor"]
    assert seen == [f"adv{n}" for n in range(5)]
    assert first["external_contact"]["name"] == "老王"
    assert (await api.call("externalcontact/get", external_userid="wmNOBODY"))["errcode"] == 40096


async def test_groupchat_list_pages_and_filters(api: Api, state: EmulatorState) -> None:
    for n in range(25):
        state.create_group("zhangwei" if n < 20 else "wangfang", f"群{n}")
    state.dismiss_group(next(iter(state.groups)))
    pages = await _pages(api, "externalcontact/groupchat/list", {"limit": 10}, "group_chat_list")
    assert [len(p) for p in pages] == [10, 10, 4]
    owned = await api.call(
        "externalcontact/groupchat/list", {"limit": 100, "owner_filter": {"userid_list": ["wangfang"]}}
    )
    assert len(owned["group_chat_list"]) == 5
    assert (await api.call("externalcontact/groupchat/list", {"limit": 1001}))["errcode"] == 40058
    assert (await api.call("externalcontact/groupchat/list", {}))["errcode"] == 40058


async def test_list_of_a_member(api: Api, state: EmulatorState) -> None:
    ext = state.add_contact("zhangwei", name="小李")["ExternalUserID"]
    assert (await api.call("externalcontact/list", userid="zhangwei"))["external_userid"] == [ext]
    assert (await api.call("externalcontact/list", userid="kefu"))["errcode"] == 60011
