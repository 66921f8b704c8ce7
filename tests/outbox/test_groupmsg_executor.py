"""Company group sends through the client and the outbox, against the WeCom emulator on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update
from sqlmodel import col

from bot.emulator.clock import ManualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.outbox.executors import add_msg_template
from bot.wecom.client import WeComClient, build_wecom_client
from bot.wecom.errors import FatalError
from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, transaction
from scrm.models import CommandStatus, OutboxCommand
from tests.conftest import TEST_CORP_ID, make_settings
from tests.outbox.support import commands_by_key

SECRET = "test-secret"
AGENT_ID = 1000002
ADD_API = "externalcontact/add_msg_template"
TEXT = {"content": "本周六新车品鉴会，诚邀您到店"}


@pytest.fixture
def world_clock() -> ManualClock:
    return ManualClock(start=datetime.now(UTC).timestamp())


@pytest.fixture
async def emulator(world_clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    state = EmulatorState(TEST_CORP_ID, clock=world_clock, seed=5)
    state.add_app(SECRET, AGENT_ID)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("zhangwei", "张伟", "BJ001")
    state.add_staff("wangfang", "王芳", "BJ001")
    async with await start_emulator(state) as running:
        yield running


@pytest.fixture
async def client(emulator: RunningEmulator, world_clock: ManualClock) -> AsyncIterator[WeComClient]:
    settings = make_settings(wecom_api_base=emulator.base_url, app_secret=SECRET, agent_id=AGENT_ID)
    async with aiohttp.ClientSession() as http:
        yield build_wecom_client(settings, http, None, clock=world_clock.now)


def customer(state: EmulatorState, userid: str = "zhangwei") -> str:
    external_userid: str = state.add_contact(userid, name="李先生")["ExternalUserID"]
    return external_userid


def utc(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


async def add_command(sessions: SessionFactory, clock: ManualClock, key: str, payload: dict[str, Any]) -> None:
    async with transaction(sessions) as session:
        await enqueue(
            session,
            corp_id=TEST_CORP_ID,
            kind=CommandKind.ADD_MSG_TEMPLATE,
            key=key,
            payload={"source": "sop", "ref": key, "text": TEXT, "attachments": [], **payload},
            not_before=utc(clock),
        )


def dispatcher(sessions: SessionFactory, client: WeComClient, clock: ManualClock) -> OutboxDispatcher:
    settings = make_settings(outbox_max_attempts=5)
    return OutboxDispatcher(sessions, client, settings, instance_id="groupmsg", clock=lambda: utc(clock))


async def test_client_methods_speak_the_emulated_api(
    emulator: RunningEmulator, client: WeComClient, world_clock: ManualClock
) -> None:
    state = emulator.state
    state.groupmsg_auto_confirm = False
    wm = customer(state)
    created = await client.add_msg_template({"sender": "zhangwei", "external_userid": [wm, "wmGone"], "text": TEXT})
    msgid = created["msgid"]
    assert created["fail_list"] == ["wmGone"]
    now = int(world_clock.now())
    listed = await client.get_groupmsg_list_v2(
        chat_type="single", start_time=now - 60, end_time=now + 60, creator="zhangwei", limit=10
    )
    assert [(m["msgid"], m["text"]) for m in listed["group_msg_list"]] == [(msgid, TEXT)]
    assert (await client.get_groupmsg_task(msgid))["task_list"] == [{"userid": "zhangwei", "status": 0}]
    await client.remind_groupmsg_send(msgid)
    state.confirm_groupmsg(msgid, "zhangwei")
    result = await client.get_groupmsg_send_result(msgid, "zhangwei", limit=10)
    assert [(r["external_userid"], r["status"]) for r in result["send_list"]] == [(wm, 1)]
    with pytest.raises(FatalError) as refused:
        await client.cancel_groupmsg_send(msgid)  # already sent
    assert refused.value.errcode == 40058

    state.groupmsg_auto_confirm = False
    unsent = (await client.add_msg_template({"sender": "zhangwei", "external_userid": [wm], "text": TEXT}))["msgid"]
    await client.cancel_groupmsg_send(unsent)
    assert state.group_msgs[unsent].tasks["zhangwei"].cancelled
    assert len(state.counters.received_by(wm)) == 1


async def test_dispatcher_creates_the_task_once(
    session_factory: SessionFactory, emulator: RunningEmulator, client: WeComClient, world_clock: ManualClock
) -> None:
    state = emulator.state
    wm = customer(state)
    chat_id = state.create_group("zhangwei", "品鉴会群", [wm])["ChatId"]
    await add_command(session_factory, world_clock, "sop:1:single", {"sender": "zhangwei", "external_userid": [wm]})
    group = {"chat_type": "group", "sender": "zhangwei", "chat_id_list": [chat_id, "wrGone"]}
    await add_command(session_factory, world_clock, "sop:1:group", group)
    assert await dispatcher(session_factory, client, world_clock).run_once() == 2

    commands = await commands_by_key(session_factory)
    single, grouped = commands["sop:1:single"], commands["sop:1:group"]
    assert (single.status, grouped.status) == (CommandStatus.DONE, CommandStatus.DONE)
    assert single.result is not None and grouped.result is not None
    assert single.result["fail_list"] == [] and grouped.result["fail_list"] == ["wrGone"]
    assert [d.msgid for d in state.counters.received_by(wm)] == [single.result["msgid"]]
    assert [d.msgid for d in state.counters.received_by(chat_id)] == [grouped.result["msgid"]]
    assert state.group_msgs[single.result["msgid"]].text == TEXT
    assert state.counters.api_calls[ADD_API] == 2


async def test_retry_after_a_lost_answer_finds_the_task_instead_of_creating_another(
    session_factory: SessionFactory, emulator: RunningEmulator, client: WeComClient, world_clock: ManualClock
) -> None:
    state = emulator.state
    wm, gone = customer(state), "wmGone"
    await add_command(session_factory, world_clock, "sop:2", {"sender": "zhangwei", "external_userid": [wm, gone]})
    command = (await commands_by_key(session_factory))["sop:2"]
    command.attempts = 1
    first = await add_msg_template(client, command, session_factory)  # WeCom did it; pretend the answer was lost
    async with transaction(session_factory) as session:  # the first claim's lease ran out: attempt 1 is spent
        await session.exec(update(OutboxCommand).where(col(OutboxCommand.id) == command.id).values(attempts=1))

    assert await dispatcher(session_factory, client, world_clock).run_once() == 1
    retried = (await commands_by_key(session_factory))["sop:2"]
    assert (retried.status, retried.attempts) == (CommandStatus.DONE, 2)
    assert retried.result == {"msgid": first["msgid"], "fail_list": [gone], "recovered": True}
    assert state.counters.api_calls[ADD_API] == 1
    assert len(state.group_msgs) == 1
    assert len(state.counters.received_by(wm)) == 1


async def test_retry_creates_the_task_when_the_first_attempt_failed(
    session_factory: SessionFactory, emulator: RunningEmulator, client: WeComClient, world_clock: ManualClock
) -> None:
    state = emulator.state
    wm = customer(state)
    state.faults.burst(ADD_API, 1, -1)
    await add_command(session_factory, world_clock, "sop:3", {"sender": "zhangwei", "external_userid": [wm]})
    worker = dispatcher(session_factory, client, world_clock)
    assert await worker.run_once() == 1  # -1: retried later
    world_clock.advance(10)
    assert await worker.run_once() == 1

    command = (await commands_by_key(session_factory))["sop:3"]
    assert (command.status, command.attempts) == (CommandStatus.DONE, 2)
    assert command.result is not None and "recovered" not in command.result
    assert state.counters.api_calls["externalcontact/get_groupmsg_list_v2"] == 1  # looked before creating
    assert len(state.group_msgs) == 1
    assert len(state.counters.received_by(wm)) == 1


async def test_retry_does_not_take_another_commands_task_with_the_same_text(
    session_factory: SessionFactory, emulator: RunningEmulator, client: WeComClient, world_clock: ManualClock
) -> None:
    state = emulator.state
    first_customer, second_customer = customer(state), customer(state)
    await add_command(
        session_factory, world_clock, "sop:4:a", {"sender": "zhangwei", "external_userid": [first_customer]}
    )
    await add_command(
        session_factory, world_clock, "sop:4:b", {"sender": "zhangwei", "external_userid": [second_customer]}
    )
    commands = await commands_by_key(session_factory)
    first = await add_msg_template(client, commands["sop:4:a"], session_factory)
    second_command = commands["sop:4:b"]
    second_command.attempts = 2  # a retry whose earlier attempt never reached WeCom
    second = await add_msg_template(client, second_command, session_factory)
    assert second["msgid"] != first["msgid"]
    assert "recovered" not in second
    assert [len(state.counters.received_by(wm)) for wm in (first_customer, second_customer)] == [1, 1]
