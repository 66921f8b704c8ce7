"""Company group sends (企业群发): add_msg_template validation, tasks, confirmation, quota, read-back APIs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.emulator.clock import ManualClock
from bot.emulator.groupmsg_records import QuotaMode
from bot.emulator.state import EmulatorState, WorldError
from tests.emulator.conftest import NO_CONTACT_SECRET, Api

SHANGHAI = ZoneInfo("Asia/Shanghai")
ADD = "externalcontact/add_msg_template"
TEXT = {"content": "本周末试驾会，欢迎到店"}


def customer(state: EmulatorState, userid: str, name: str = "客户") -> str:
    external_userid: str = state.add_contact(userid, name=name)["ExternalUserID"]
    return external_userid


def advance(api: Api, clock: ManualClock, seconds: float) -> None:
    """Move the clock; the test client fetches a fresh token afterwards (tokens live 7200 s)."""
    clock.advance(seconds)
    api.token = ""


def move_to(
    api: Api, clock: ManualClock, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> None:
    """Move the clock forward to a Shanghai wall-clock time."""
    advance(api, clock, datetime(year, month, day, hour, minute, second, tzinfo=SHANGHAI).timestamp() - clock.now())


async def add(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    return await api.call(ADD, {"text": TEXT, **body})


async def statuses(api: Api, msgid: str, userid: str, **paging: Any) -> dict[str, int]:
    result = await api.call("externalcontact/get_groupmsg_send_result", {"msgid": msgid, "userid": userid, **paging})
    assert result["errcode"] == 0, result
    return {item.get("external_userid") or item["chat_id"]: item["status"] for item in result["send_list"]}


async def test_every_invalid_request_is_refused(api: Api, state: EmulatorState) -> None:
    wm = customer(state, "zhangwei")
    link = {"msgtype": "link", "link": {"title": "试驾", "url": "https://example.com"}}
    to_wm = {"sender": "zhangwei", "external_userid": [wm]}
    many_customers = {"sender": "zhangwei", "external_userid": [f"wm{i}" for i in range(10_001)]}
    many_groups = {"chat_type": "group", "sender": "zhangwei", "chat_id_list": [f"wr{i}" for i in range(2001)]}
    voice = [{"msgtype": "voice", "voice": {}}]
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("unknown chat_type", {"chat_type": "broadcast", "external_userid": [wm]}, 40058),
        ("unknown sender", {"sender": "nobody", "external_userid": [wm]}, 40003),
        ("sender without contact permission", {"sender": "kefu", "external_userid": [wm]}, 40003),
        ("no sender and no customers", {"external_userid": []}, 40058),
        ("over 10000 customers", many_customers, 40058),
        ("group without sender", {"chat_type": "group", "chat_id_list": ["wr1"]}, 40058),
        ("over 2000 groups", many_groups, 40058),
        ("text over 4000 bytes", {**to_wm, "text": {"content": "试" * 1334}}, 40058),
        ("ten attachments", {**to_wm, "attachments": [link] * 10}, 40058),
        ("unknown attachment type", {**to_wm, "attachments": voice}, 40058),
        ("nothing to send", {**to_wm, "text": {"content": ""}}, 40058),
        ("every recipient invalid", {"sender": "wangfang", "external_userid": [wm, "wmNobody"]}, 40058),
    ]  # fmt: skip
    for reason, body, errcode in cases:
        answer = await add(api, body)
        assert answer["errcode"] == errcode, reason
    assert state.group_msgs == {}
    exactly = await add(api, {"sender": "zhangwei", "external_userid": [wm], "text": {"content": "试" * 1333}})
    assert exactly["errcode"] == 0
    nine = await add(api, {"sender": "zhangwei", "external_userid": [wm], "attachments": [link] * 9, "text": None})
    assert nine["errcode"] == 0


async def test_customers_of_someone_else_go_to_the_fail_list(api: Api, state: EmulatorState) -> None:
    mine = [customer(state, "zhangwei", f"客户{i}") for i in range(2)]
    theirs = customer(state, "wangfang")
    answer = await add(api, {"sender": "zhangwei", "external_userid": [*mine, theirs, "wmUnknown"]})
    assert answer["errcode"] == 0
    assert answer["fail_list"] == [theirs, "wmUnknown"]
    assert answer["msgid"].startswith("msg")
    assert await statuses(api, answer["msgid"], "zhangwei") == dict.fromkeys(mine, 1)  # auto-confirmed: sent
    for external_userid in mine:
        [delivery] = state.counters.received_by(external_userid)
        assert (delivery.msgid, delivery.sender, delivery.text) == (answer["msgid"], "zhangwei", TEXT["content"])
    assert state.counters.received_by(theirs) == []


async def test_without_sender_each_customer_gets_a_task_of_its_first_follower(
    api: Api, state: EmulatorState, clock: ManualClock
) -> None:
    shared = customer(state, "zhangwei")
    clock.advance(60)
    state.add_contact("wangfang", shared)
    only_wangfang = customer(state, "wangfang")
    answer = await add(api, {"external_userid": [shared, only_wangfang, "wmUnknown"]})
    assert answer["fail_list"] == ["wmUnknown"]
    tasks = await api.call("externalcontact/get_groupmsg_task", {"msgid": answer["msgid"]})
    assert sorted((t["userid"], t["status"]) for t in tasks["task_list"]) == [("wangfang", 2), ("zhangwei", 2)]
    assert await statuses(api, answer["msgid"], "zhangwei") == {shared: 1}
    assert await statuses(api, answer["msgid"], "wangfang") == {only_wangfang: 1}
    assert len(state.counters.received_by(shared)) == 1


async def test_group_sends_reach_only_live_groups_the_sender_owns(api: Api, state: EmulatorState) -> None:
    wm = customer(state, "zhangwei")
    owned = state.create_group("zhangwei", "试驾车主群", [wm])["ChatId"]
    dismissed = state.create_group("zhangwei", "旧群")["ChatId"]
    state.dismiss_group(dismissed)
    not_owned = state.create_group("wangfang", "王芳的群")["ChatId"]
    answer = await add(api, {"chat_type": "group", "sender": "zhangwei", "chat_id_list": [owned, dismissed, not_owned]})
    assert answer["fail_list"] == [dismissed, not_owned]
    assert await statuses(api, answer["msgid"], "zhangwei") == {owned: 1}
    assert [d.chat_type for d in state.counters.received_by(owned)] == ["group"]
    assert state.counters.received_by(wm) == []  # a group send is not a send to each member


async def test_manual_confirmation_reminders_and_not_a_friend(
    api: Api, state: EmulatorState, clock: ManualClock
) -> None:
    state.groupmsg_auto_confirm = False
    stays, leaves = customer(state, "zhangwei", "留下"), customer(state, "zhangwei", "离开")
    msgid = (await add(api, {"sender": "zhangwei", "external_userid": [stays, leaves]}))["msgid"]
    tasks = await api.call("externalcontact/get_groupmsg_task", {"msgid": msgid})
    assert tasks["task_list"] == [{"userid": "zhangwei", "status": 0}]
    assert await statuses(api, msgid, "zhangwei") == {stays: 0, leaves: 0}
    for _ in range(3):
        assert (await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid}))["errcode"] == 0
        advance(api, clock, 3600)
    assert (await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid}))["errcode"] == 40058
    advance(api, clock, 21 * 3600 + 1)  # the first reminder is now more than 24 h old
    assert (await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid}))["errcode"] == 0

    state.contact_deletes_staff("zhangwei", leaves)
    state.confirm_groupmsg(msgid, "zhangwei")
    assert await statuses(api, msgid, "zhangwei") == {stays: 1, leaves: 2}
    tasks = await api.call("externalcontact/get_groupmsg_task", {"msgid": msgid})
    assert tasks["task_list"] == [{"userid": "zhangwei", "status": 2, "send_time": state.now_int()}]
    with pytest.raises(WorldError):
        state.confirm_groupmsg(msgid, "zhangwei")
    assert (await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid}))["errcode"] == 40058
    assert [len(state.counters.received_by(wm)) for wm in (stays, leaves)] == [1, 0]


async def test_cancel_stops_unsent_tasks_only(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    state.groupmsg_auto_confirm = False
    of_zhangwei, of_wangfang = customer(state, "zhangwei"), customer(state, "wangfang")
    msgid = (await add(api, {"external_userid": [of_zhangwei, of_wangfang]}))["msgid"]
    state.confirm_groupmsg(msgid, "zhangwei")
    assert (await api.call("externalcontact/cancel_groupmsg_send", {"msgid": msgid}))["errcode"] == 0
    with pytest.raises(WorldError):
        state.confirm_groupmsg(msgid, "wangfang")
    assert await statuses(api, msgid, "wangfang") == {of_wangfang: 0}
    assert (await api.call("externalcontact/cancel_groupmsg_send", {"msgid": msgid}))["errcode"] == 40058
    assert (await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid}))["errcode"] == 40058
    assert [len(state.counters.received_by(wm)) for wm in (of_zhangwei, of_wangfang)] == [1, 0]

    state.groupmsg_auto_confirm = True
    sent = (await add(api, {"sender": "zhangwei", "external_userid": [of_zhangwei]}))["msgid"]
    assert (await api.call("externalcontact/cancel_groupmsg_send", {"msgid": sent}))["errcode"] == 40058
    assert (await api.call("externalcontact/cancel_groupmsg_send", {"msgid": "msgUnknown"}))["errcode"] == 40058


async def send_status(api: Api, wm: str) -> int:
    msgid = (await add(api, {"sender": "zhangwei", "external_userid": [wm]}))["msgid"]
    return (await statuses(api, msgid, "zhangwei"))[wm]


async def test_quota_days_in_month_resets_at_shanghai_month_end(
    api: Api, state: EmulatorState, clock: ManualClock
) -> None:
    assert state.groupmsg_quota.mode is QuotaMode.DAYS_IN_MONTH
    wm = customer(state, "zhangwei")
    move_to(api, clock, 2026, 2, 1)
    assert [await send_status(api, wm) for _ in range(28)] == [1] * 28  # February 2026 has 28 days
    assert await send_status(api, wm) == 3
    move_to(api, clock, 2026, 2, 28, 23, 59, 59)
    assert await send_status(api, wm) == 3
    clock.advance(1)  # 2026-03-01 00:00 in Shanghai (still February 28 in UTC)
    assert await send_status(api, wm) == 1
    assert len(state.counters.received_by(wm)) == 29


@pytest.mark.parametrize(
    ("mode", "allowed", "first_moment", "last_moment"),
    [
        (QuotaMode.FOUR_PER_MONTH, 4, (2026, 4, 1), (2026, 4, 30, 23, 59, 59)),
        (QuotaMode.SEVEN_PER_WEEK, 7, (2026, 3, 2), (2026, 3, 8, 23, 59, 59)),  # Monday 2 .. Sunday 8 March
        (QuotaMode.ONE_PER_DAY, 1, (2026, 3, 2), (2026, 3, 2, 23, 59, 59)),
    ],
)
async def test_quota_modes(
    api: Api,
    state: EmulatorState,
    clock: ManualClock,
    mode: QuotaMode,
    allowed: int,
    first_moment: tuple[int, int, int],
    last_moment: tuple[int, int, int, int, int, int],
) -> None:
    state.groupmsg_quota.mode = mode
    wm = customer(state, "zhangwei")
    move_to(api, clock, *first_moment)
    assert [await send_status(api, wm) for _ in range(allowed)] == [1] * allowed
    move_to(api, clock, *last_moment)
    assert await send_status(api, wm) == 3
    clock.advance(1)  # the next period starts at Shanghai midnight
    assert await send_status(api, wm) == 1


async def test_quota_is_per_customer_and_per_group_across_senders(
    api: Api, state: EmulatorState, clock: ManualClock
) -> None:
    state.groupmsg_quota.mode = QuotaMode.ONE_PER_DAY
    shared = customer(state, "zhangwei")
    state.add_contact("wangfang", shared)
    other = customer(state, "wangfang")
    chat_id = state.create_group("wangfang", "车主群", [shared])["ChatId"]
    first = await add(api, {"sender": "zhangwei", "external_userid": [shared]})
    second = await add(api, {"sender": "wangfang", "external_userid": [shared, other]})
    assert await statuses(api, first["msgid"], "zhangwei") == {shared: 1}
    assert await statuses(api, second["msgid"], "wangfang") == {shared: 3, other: 1}
    group_first = await add(api, {"chat_type": "group", "sender": "wangfang", "chat_id_list": [chat_id]})
    group_second = await add(api, {"chat_type": "group", "sender": "wangfang", "chat_id_list": [chat_id]})
    assert await statuses(api, group_first["msgid"], "wangfang") == {chat_id: 1}
    assert await statuses(api, group_second["msgid"], "wangfang") == {chat_id: 3}
    assert [len(state.counters.received_by(r)) for r in (shared, other, chat_id)] == [1, 1, 1]


async def test_list_v2_filters_and_pages(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    wm = customer(state, "zhangwei")
    theirs = customer(state, "wangfang")
    start = state.now_int()
    created = []
    for i in range(5):
        clock.advance(60)
        body = {"sender": "zhangwei", "external_userid": [wm], "text": {"content": f"第{i}条"}}
        created.append((await api.call(ADD, body))["msgid"])
    clock.advance(60)
    other = (await add(api, {"sender": "wangfang", "external_userid": [theirs]}))["msgid"]
    end = state.now_int()

    query = {"chat_type": "single", "start_time": start, "end_time": end, "creator": "zhangwei", "limit": 2}
    listed: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(5):
        page = await api.call("externalcontact/get_groupmsg_list_v2", {**query, "cursor": cursor})
        assert page["errcode"] == 0, page
        assert len(page["group_msg_list"]) <= 2
        listed.extend(page["group_msg_list"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [m["msgid"] for m in listed] == created
    assert listed[0]["text"] == {"content": "第0条"}
    assert {(m["creator"], m["create_type"]) for m in listed} == {("zhangwei", 0)}

    everyone = await api.call("externalcontact/get_groupmsg_list_v2", {**query, "creator": "", "limit": 100})
    assert [m["msgid"] for m in everyone["group_msg_list"]] == [*created, other]
    later = await api.call("externalcontact/get_groupmsg_list_v2", {**query, "start_time": end - 30})
    assert [m["msgid"] for m in later["group_msg_list"]] == []  # zhangwei's last one is 60 s before end
    personal = await api.call("externalcontact/get_groupmsg_list_v2", {**query, "filter_type": 1})
    assert personal["group_msg_list"] == []
    groups = await api.call("externalcontact/get_groupmsg_list_v2", {**query, "chat_type": "group"})
    assert groups["group_msg_list"] == []
    too_long = {**query, "start_time": end - 32 * 86_400}
    for bad in (too_long, {**query, "limit": 101}, {**query, "end_time": start - 1}, {**query, "chat_type": "x"}):
        assert (await api.call("externalcontact/get_groupmsg_list_v2", bad))["errcode"] == 40058


async def test_task_and_send_result_pages(api: Api, state: EmulatorState) -> None:
    customers = [customer(state, "zhangwei", f"客户{i}") for i in range(5)]
    msgid = (await add(api, {"sender": "zhangwei", "external_userid": customers}))["msgid"]
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        page = await api.call(
            "externalcontact/get_groupmsg_send_result",
            {"msgid": msgid, "userid": "zhangwei", "limit": 2, "cursor": cursor},
        )
        assert len(page["send_list"]) <= 2
        seen.extend(item["external_userid"] for item in page["send_list"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == customers
    one = await api.call("externalcontact/get_groupmsg_task", {"msgid": msgid, "limit": 1})
    assert [t["userid"] for t in one["task_list"]] == ["zhangwei"]
    assert one["next_cursor"] == ""
    bad_limit = {"msgid": msgid, "userid": "zhangwei", "limit": 1001}
    assert (await api.call("externalcontact/get_groupmsg_send_result", bad_limit))["errcode"] == 40058
    assert (await api.call("externalcontact/get_groupmsg_task", {"msgid": "msgNope"}))["errcode"] == 40058
    assert await statuses(api, msgid, "wangfang") == {}


async def test_group_send_apis_need_a_contact_app(api: Api, state: EmulatorState) -> None:
    wm = customer(state, "zhangwei")
    hr = Api(api.http, api.base_url, NO_CONTACT_SECRET)
    assert (await hr.call(ADD, {"sender": "zhangwei", "external_userid": [wm], "text": TEXT}))["errcode"] == 48002
    assert state.group_msgs == {}
