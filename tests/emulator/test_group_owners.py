"""Simulated group owners confirming company group-send tasks (bot/emulator/group_owners.py), and the
coverage helpers a campaign test asserts with."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from bot.emulator.api_groupmsg import add_msg_template, cancel_groupmsg_send, remind_groupmsg_send
from bot.emulator.clock import ManualClock
from bot.emulator.group_owners import (
    NEVER_CONFIRMS,
    GroupSendOwners,
    OwnerAction,
    OwnerProfile,
    draw_owner_profiles,
)
from bot.emulator.groupmsg_records import RECIPIENT_SENT, TASK_SENT, TASK_UNSENT
from bot.emulator.routes import ApiCall, Handler
from bot.emulator.server import start_emulator
from bot.emulator.state import EmulatorState
from tests.emulator.conftest import SECRET, Api

TEXT = {"content": "本周六车主群福利：到店保养享八折"}


def call(state: EmulatorState, handler: Handler, body: dict[str, Any]) -> dict[str, Any]:
    """Call an emulated API in-process (the HTTP layer is covered by the last test)."""
    return handler(ApiCall(state, "externalcontact", {}, body, state.apps[SECRET]))


def groups_of(state: EmulatorState, owner: str, count: int = 1) -> list[str]:
    chat_ids: list[str] = []
    for index in range(count):
        member: str = state.add_contact(owner, name=f"车主{index}")["ExternalUserID"]
        chat_ids.append(state.create_group(owner, f"{owner}的车主群{index}", [member])["ChatId"])
    return chat_ids


def push(state: EmulatorState, owner: str, chat_ids: list[str]) -> str:
    body = {"chat_type": "group", "sender": owner, "chat_id_list": chat_ids, "text": TEXT}
    msgid: str = call(state, add_msg_template, body)["msgid"]
    return msgid


def status(state: EmulatorState, msgid: str, userid: str) -> int:
    return state.group_msgs[msgid].tasks[userid].status


@pytest.fixture
def world(state: EmulatorState) -> EmulatorState:
    state.groupmsg_auto_confirm = False  # the owners' job from now on
    return state


def test_owners_confirm_after_their_own_delay(world: EmulatorState, clock: ManualClock) -> None:
    start = clock.now()
    owners = GroupSendOwners(
        world, {"zhangwei": OwnerProfile(confirm_after=60.0), "wangfang": OwnerProfile(confirm_after=300.0)}
    )
    zhang, wang = groups_of(world, "zhangwei", 2), groups_of(world, "wangfang")
    first = push(world, "zhangwei", zhang)
    clock.advance(0.5)
    second = push(world, "wangfang", wang)
    assert world.group_msgs[second].created_at == start + 0.5
    assert world.group_msgs[second].create_time == int(start)
    assert owners.step() == 0
    clock.advance(59.5)
    assert owners.step() == 1
    assert (status(world, first, "zhangwei"), status(world, second, "wangfang")) == (TASK_SENT, TASK_UNSENT)
    assert [r.status for r in world.group_msgs[first].recipients] == [RECIPIENT_SENT] * 2
    assert [d.recipient for d in world.counters.group_sends] == zhang
    assert owners.next_due() == start + 300.5
    clock.advance(240)
    assert owners.step() == 0
    clock.advance(0.5)
    assert owners.step() == 1
    assert owners.actions == [
        OwnerAction(start + 60, first, "zhangwei", "own"),
        OwnerAction(start + 300.5, second, "wangfang", "own"),
    ]
    assert owners.next_due() is None


def test_never_confirming_owners_and_the_default(world: EmulatorState, clock: ManualClock) -> None:
    owners = GroupSendOwners(world, {"zhangwei": NEVER_CONFIRMS}, default=OwnerProfile(confirm_after=120.0))
    never = push(world, "zhangwei", groups_of(world, "zhangwei"))
    default = push(world, "wangfang", groups_of(world, "wangfang"))
    for _ in range(3):
        call(world, remind_groupmsg_send, {"msgid": never})
        clock.advance(3600)
        owners.step()
    clock.advance(30 * 86_400)
    assert owners.step() == 0
    assert status(world, never, "zhangwei") == TASK_UNSENT
    assert owners.actions == [OwnerAction(clock.now() - 30 * 86_400 - 2 * 3600, default, "wangfang", "own")]
    assert world.counters.received_by(world.group_msgs[never].recipients[0].recipient) == []


def test_reminder_driven_owners_confirm_after_the_first_reminder(world: EmulatorState, clock: ManualClock) -> None:
    owners = GroupSendOwners(
        world,
        {
            "zhangwei": OwnerProfile(confirm_after=None, after_reminder=120.0),
            "wangfang": OwnerProfile(confirm_after=3600.0, after_reminder=600.0),  # whichever comes first
        },
    )
    reminded = push(world, "zhangwei", groups_of(world, "zhangwei"))
    both = push(world, "wangfang", groups_of(world, "wangfang"))
    clock.advance(86_400)
    assert owners.step() == 1  # wangfang on their own; zhangwei waits for a reminder
    reminded_at = clock.now()
    call(world, remind_groupmsg_send, {"msgid": reminded})
    assert owners.step() == 0
    clock.advance(100)
    call(world, remind_groupmsg_send, {"msgid": reminded})  # a second one does not push the first back
    clock.advance(19)
    assert owners.step() == 0
    clock.advance(1)
    assert owners.step() == 1
    assert owners.did("reminder") == [OwnerAction(reminded_at + 120, reminded, "zhangwei", "reminder")]
    assert status(world, reminded, "zhangwei") == TASK_SENT
    clock.advance(3600)
    assert owners.step() == 0  # the second reminder's plan finds the task sent

    earlier = push(world, "wangfang", groups_of(world, "wangfang"))
    clock.advance(100)
    call(world, remind_groupmsg_send, {"msgid": earlier})
    clock.advance(600)
    assert owners.step() == 1
    assert owners.actions[-1] == OwnerAction(clock.now(), earlier, "wangfang", "reminder")
    assert [a.msgid for a in owners.did("own")] == [both]


def test_cancelled_and_hand_confirmed_tasks_are_left_alone(world: EmulatorState, clock: ManualClock) -> None:
    profile = OwnerProfile(confirm_after=60.0, after_reminder=10.0)
    owners = GroupSendOwners(world, {"zhangwei": profile, "wangfang": profile})
    cancelled = push(world, "zhangwei", groups_of(world, "zhangwei"))
    by_hand = push(world, "wangfang", groups_of(world, "wangfang"))
    call(world, remind_groupmsg_send, {"msgid": cancelled})
    assert owners.step() == 0  # the reminder is planned before the cancel
    call(world, cancel_groupmsg_send, {"msgid": cancelled})
    world.confirm_groupmsg(by_hand, "wangfang")
    clock.advance(3600)
    assert owners.step() == 0
    assert owners.actions == []
    assert world.group_msgs[cancelled].tasks["zhangwei"].cancelled
    assert [d.msgid for d in world.counters.group_sends] == [by_hand]
    assert owners.next_due() is None


def test_auto_confirmed_messages_leave_nothing_to_do(state: EmulatorState, clock: ManualClock) -> None:
    assert state.groupmsg_auto_confirm  # the caller forgot to turn it off
    owners = GroupSendOwners(state, {})
    push(state, "zhangwei", groups_of(state, "zhangwei"))
    clock.advance(3600)
    assert (owners.step(), owners.actions) == (0, [])


async def test_run_steps_until_stopped(world: EmulatorState, clock: ManualClock) -> None:
    owners = GroupSendOwners(world, {}, default=OwnerProfile(confirm_after=5.0))
    msgid = push(world, "zhangwei", groups_of(world, "zhangwei"))
    clock.advance(5)
    stop = asyncio.Event()
    running = asyncio.create_task(owners.run(stop, interval=0.01))
    await asyncio.sleep(0)  # the first step runs before run() waits
    stop.set()
    await asyncio.wait_for(running, 1)
    assert [(a.msgid, a.why) for a in owners.actions] == [(msgid, "own")]


def test_draw_owner_profiles_is_deterministic() -> None:
    userids = [f"staff{i:03d}" for i in range(200)]
    drawn = draw_owner_profiles(userids, seed=42)
    assert drawn == draw_owner_profiles(reversed(userids), seed=42)
    assert drawn != draw_owner_profiles(userids, seed=43)
    assert list(drawn) == sorted(userids)
    never = [p for p in drawn.values() if p == NEVER_CONFIRMS]
    reminded = [p for p in drawn.values() if p.confirm_after is None and p.after_reminder is not None]
    own = [p for p in drawn.values() if p.confirm_after is not None]
    assert (len(never), len(reminded), len(own)) == (20, 20, 160)
    assert all(p.after_reminder is None for p in own)
    delays = [p.confirm_after or p.after_reminder for p in drawn.values() if p.confirms]
    assert all(d is not None and 60.0 <= d <= 3600.0 for d in delays)
    mixed = draw_owner_profiles(userids, seed=1, never_share=0.5, reminder_share=0.5, delay_range=(1.0, 2.0))
    assert sum(not p.confirms for p in mixed.values()) == 100
    with pytest.raises(ValueError):
        draw_owner_profiles(userids, seed=1, never_share=0.7, reminder_share=0.4)
    with pytest.raises(ValueError):
        draw_owner_profiles(userids, seed=1, never_share=-0.1)
    with pytest.raises(ValueError):
        draw_owner_profiles(userids, seed=1, delay_range=(5.0, 1.0))


def test_coverage_and_messages_by_creator(world: EmulatorState) -> None:
    zhang, wang = groups_of(world, "zhangwei", 3), groups_of(world, "wangfang", 2)
    first = push(world, "zhangwei", zhang[:2])
    second = push(world, "zhangwei", zhang[2:])
    theirs = push(world, "wangfang", wang)
    again = push(world, "wangfang", wang[:1])
    call(world, cancel_groupmsg_send, {"msgid": again})
    wm: str = world.add_contact("zhangwei", name="单聊客户")["ExternalUserID"]
    single = call(world, add_msg_template, {"sender": "zhangwei", "external_userid": [wm], "text": TEXT})["msgid"]

    coverage = world.group_send_coverage("group")
    assert coverage == {zhang[0]: [first], zhang[1]: [first], zhang[2]: [second], wang[0]: [theirs], wang[1]: [theirs]}
    assert all(len(msgids) == 1 for msgids in coverage.values())  # every group covered exactly once
    assert world.group_send_coverage("single") == {wm: [single]}
    assert world.group_msgs_by_creator() == {"zhangwei": [first, second, single], "wangfang": [theirs, again]}


def test_thousands_of_groups(world: EmulatorState, clock: ManualClock) -> None:
    staff = [f"owner{i:03d}" for i in range(200)]
    for userid in staff:
        world.add_staff(userid, userid, "BJ001")
    groups = {userid: groups_of(world, userid, 10) for userid in staff}
    profiles = draw_owner_profiles(staff, seed=7, delay_range=(60.0, 600.0))
    owners = GroupSendOwners(world, profiles)
    msgids = {userid: push(world, userid, groups[userid]) for userid in staff}
    for _ in range(20):
        clock.advance(30)
        owners.step()
    confirming = {u for u, p in profiles.items() if p.confirm_after is not None}
    assert {a.userid for a in owners.actions} == confirming
    for action in owners.actions:  # each within one 30 s step of its due time
        late = action.at - world.group_msgs[action.msgid].created_at - (profiles[action.userid].confirm_after or 0)
        assert 0 <= late < 30
    assert len(world.counters.group_sends) == 10 * len(confirming)
    for userid in (u for u, p in profiles.items() if p.after_reminder is not None):
        call(world, remind_groupmsg_send, {"msgid": msgids[userid]})
    clock.advance(600)
    assert owners.step() == 20
    coverage = world.group_send_coverage("group")
    assert sorted(coverage) == sorted(chat_id for chat_ids in groups.values() for chat_id in chat_ids)
    assert all(len(covered) == 1 for covered in coverage.values())


async def test_a_reminder_through_the_http_api_moves_a_reminder_driven_owner(
    world: EmulatorState, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    owners = GroupSendOwners(world, {"zhangwei": OwnerProfile(confirm_after=None, after_reminder=90.0)})
    chat_ids = groups_of(world, "zhangwei", 2)
    async with await start_emulator(world) as running:
        api = Api(http, running.base_url)
        body = {"chat_type": "group", "sender": "zhangwei", "chat_id_list": chat_ids, "text": TEXT}
        created = await api.call("externalcontact/add_msg_template", body)
        assert created["errcode"] == 0, created
        msgid = created["msgid"]
        clock.advance(1800)
        assert owners.step() == 0
        reminder = await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid})
        assert reminder["errcode"] == 0, reminder
        clock.advance(89)
        assert owners.step() == 0
        clock.advance(1)
        assert owners.step() == 1
        tasks = await api.call("externalcontact/get_groupmsg_task", {"msgid": msgid})
        assert tasks["task_list"] == [{"userid": "zhangwei", "status": TASK_SENT, "send_time": int(clock.now())}]
        result = await api.call("externalcontact/get_groupmsg_send_result", {"msgid": msgid, "userid": "zhangwei"})
        assert sorted((r["chat_id"], r["status"]) for r in result["send_list"]) == sorted(
            (chat_id, RECIPIENT_SENT) for chat_id in chat_ids
        )
        late = await api.call("externalcontact/remind_groupmsg_send", {"msgid": msgid})
        assert late["errcode"] == 40058  # nothing left to remind
    assert owners.actions == [OwnerAction(clock.now(), msgid, "zhangwei", "reminder")]
    assert world.group_send_coverage("group") == {chat_id: [msgid] for chat_id in chat_ids}
