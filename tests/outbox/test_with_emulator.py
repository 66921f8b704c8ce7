"""The client and the dispatcher against the project's WeCom emulator (bot/emulator) on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.emulator.clock import ManualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.wecom.client import WeComClient, build_wecom_client
from bot.wecom.errors import FatalError
from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, transaction
from scrm.models import CommandStatus
from tests.conftest import TEST_CORP_ID, make_settings
from tests.outbox.support import commands_by_key

SECRET = "test-secret"
AGENT_ID = 1000002


@pytest.fixture
def world_clock() -> ManualClock:
    return ManualClock(start=datetime.now(UTC).timestamp())


@pytest.fixture
async def emulator(world_clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    state = EmulatorState(TEST_CORP_ID, clock=world_clock, seed=5)
    state.add_app(SECRET, AGENT_ID)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("zhangwei", "张伟", "BJ001")
    running = await start_emulator(state)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def client(emulator: RunningEmulator, world_clock: ManualClock) -> AsyncIterator[WeComClient]:
    settings = make_settings(wecom_api_base=emulator.base_url, app_secret=SECRET, agent_id=AGENT_ID)
    async with aiohttp.ClientSession() as http:
        yield build_wecom_client(settings, http, None, clock=world_clock.now)


def utc(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


async def test_client_speaks_the_emulated_api(emulator: RunningEmulator, client: WeComClient) -> None:
    state = emulator.state
    fields = state.add_contact("zhangwei", name="李先生", state="ad:7:BJ001")
    detail = await client.get_external_contact(fields["ExternalUserID"])
    assert detail["external_contact"]["name"] == "李先生"
    assert [f["userid"] for f in detail["follow_user"]] == ["zhangwei"]
    await client.send_welcome_msg(fields["WelcomeCode"], {"content": "您好"})
    with pytest.raises(FatalError) as info:
        await client.send_welcome_msg(fields["WelcomeCode"], {"content": "您好"})
    assert info.value.errcode == 41051
    state.invalidate_all_tokens()
    sent = await client.send_app_message({"touser": "zhangwei", "msgtype": "text", "text": {"content": "新线索"}})
    assert sent["errcode"] == 0
    assert state.counters.api_calls["gettoken"] == 2
    assert state.counters.messages_delivered["zhangwei"] == 1


async def test_dispatcher_sends_the_welcome_within_its_window(
    session_factory: SessionFactory,
    emulator: RunningEmulator,
    client: WeComClient,
    world_clock: ManualClock,
) -> None:
    state = emulator.state
    state.faults.burst("externalcontact/send_welcome_msg", 2, -1)
    first = state.add_contact("zhangwei", name="王女士")
    second = state.add_contact("zhangwei", name="赵先生")
    async with transaction(session_factory) as session:
        for key, fields in [("first", first), ("second", second)]:
            await enqueue(
                session,
                corp_id=TEST_CORP_ID,
                kind=CommandKind.SEND_WELCOME,
                key=f"welcome:{key}",
                payload={"welcome_code": fields["WelcomeCode"], "text": {"content": "欢迎试驾"}, "attachments": []},
                not_before=utc(world_clock),
                deadline=utc(world_clock) + timedelta(seconds=20),
            )
    settings = make_settings(outbox_max_attempts=5)
    dispatcher = OutboxDispatcher(session_factory, client, settings, instance_id="emu", clock=lambda: utc(world_clock))
    assert await dispatcher.run_once() == 2  # both hit the scripted -1 burst
    world_clock.advance(5)
    assert await dispatcher.run_once() == 2
    commands = await commands_by_key(session_factory)
    assert {c.status for c in commands.values()} == {CommandStatus.DONE}
    assert sorted(state.counters.welcome_sends.values()) == [1, 1]
