"""Several dispatchers, wake-ups and a hostile API: every command ends done, none is executed twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.outbox.wakeup import publish_wakeup, relay_wakeups
from scrm.commands import CommandKind
from scrm.db import SessionFactory, make_engine, make_session_factory
from scrm.models import CommandStatus
from tests.conftest import REDIS_URL
from tests.outbox.support import add_command, commands_by_key, drain, make_dispatcher
from tests.wecom.backends import Backend
from tests.wecom.fake_api import EXT, FakeClock, RunningFake, Stall

WELCOME = f"{EXT}/send_welcome_msg"
MARK_TAG = f"{EXT}/mark_tag"


@pytest.fixture
async def second_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Another process's connection pool on the same database."""
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def add_mixed_commands(sessions: SessionFactory, clock: FakeClock, count: int) -> None:
    for i in range(count):
        if i % 2:
            payload = {"welcome_code": f"code-{i}", "text": {"content": "欢迎"}, "attachments": []}
            await add_command(sessions, clock, CommandKind.SEND_WELCOME, f"welcome:code-{i}", payload)
        else:
            payload = {"userid": "zhangsan", "external_userid": f"wm{i}", "add_tag": ["et1"], "remove_tag": []}
            await add_command(sessions, clock, CommandKind.MARK_TAG, f"tag:wm{i}", payload)


async def add_welcome(sessions: SessionFactory, clock: FakeClock, code: str) -> None:
    payload = {"welcome_code": code, "text": {"content": "欢迎"}}
    await add_command(sessions, clock, CommandKind.SEND_WELCOME, f"welcome:{code}", payload)


async def test_two_dispatchers_never_run_the_same_command(
    session_factory: SessionFactory,
    second_engine: AsyncEngine,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    total = 200
    for i in range(total):
        payload = {"userid": "zhangsan", "external_userid": f"wm{i}", "add_tag": ["et1"], "remove_tag": []}
        await add_command(session_factory, clock, CommandKind.MARK_TAG, f"tag:wm{i}", payload)
    dispatchers = [
        make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock, instance_id="one"),
        make_dispatcher(
            make_session_factory(second_engine),
            memory_backend.client(fake_wecom, http_session),
            clock,
            instance_id="two",
        ),
    ]
    stop = asyncio.Event()
    runs = [asyncio.create_task(d.run(stop)) for d in dispatchers]
    async with asyncio.timeout(60):
        await fake_wecom.state.wait_for_calls(MARK_TAG, total)
        stop.set()
        await asyncio.gather(*runs)
    commands = await commands_by_key(session_factory)
    assert Counter(c.status for c in commands.values()) == {CommandStatus.DONE: total}
    assert {c.attempts for c in commands.values()} == {1}
    assert fake_wecom.state.calls[MARK_TAG] == total
    assert sorted(fake_wecom.state.marks.values()) == [1] * total


async def test_wake_claims_a_new_command_without_waiting_for_the_poll(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    client = memory_backend.client(fake_wecom, http_session)
    dispatcher = make_dispatcher(session_factory, client, clock, poll_interval=3600)
    stop = asyncio.Event()
    await add_welcome(session_factory, clock, "c0")
    run = asyncio.create_task(dispatcher.run(stop))
    async with asyncio.timeout(30):
        await fake_wecom.state.wait_for_calls(WELCOME, 1)  # c0 is sent: the loop now waits for a wake-up
        await add_welcome(session_factory, clock, "c1")
        dispatcher.wake()
        await fake_wecom.state.wait_for_calls(WELCOME, 2)
        stop.set()
        await run
    assert (await commands_by_key(session_factory))["welcome:c1"].status == CommandStatus.DONE


async def test_busy_errors_a_45009_burst_and_a_revoked_token_lose_and_duplicate_nothing(
    session_factory: SessionFactory,
    second_engine: AsyncEngine,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    redis_backend: Backend,
) -> None:
    total = 160
    state = fake_wecom.state
    state.busy_rate = 0.10
    await add_mixed_commands(session_factory, clock, total)
    tokens = redis_backend.token_cache()  # two processes sharing Redis: one token, one block
    dispatchers = [
        make_dispatcher(
            sessions,
            redis_backend.client(fake_wecom, http_session, tokens=tokens, limiter=redis_backend.limiter()),
            clock,
            instance_id=name,
        )
        for name, sessions in [("one", session_factory), ("two", make_session_factory(second_engine))]
    ]
    assert sum(await asyncio.gather(*(d.run_once() for d in dispatchers))) > 0
    state.invalidate_tokens()
    state.script(WELCOME, 45009, 45009, 45009)
    state.script(MARK_TAG, 45009)
    await drain(session_factory, clock, *dispatchers)

    commands = await commands_by_key(session_factory)
    assert Counter(c.status for c in commands.values()) == {CommandStatus.DONE: total}
    assert sorted(state.welcome_sends.values()) == [1] * (total // 2)
    assert sorted(state.marks.values()) == [1] * (total // 2)
    answered = Counter(r.errcode for r in state.requests)
    assert answered[-1] > 0 and answered[45009] == 4 and answered[40014] > 0
    assert answered[41051] == 0  # no welcome code was ever tried a second time after it worked
    assert state.calls["/cgi-bin/gettoken"] == 2
    assert any(c.attempts > 1 for c in commands.values())


async def test_a_dispatcher_that_lost_its_lease_cannot_overwrite_the_new_owner(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    payload = {"userid": "zhangsan", "external_userid": "wm1", "add_tag": ["et1"], "remove_tag": []}
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:wm1", payload)
    fake_wecom.state.script(MARK_TAG, Stall())
    slow = make_dispatcher(
        session_factory, memory_backend.client(fake_wecom, http_session, timeout=1.0), clock, instance_id="slow"
    )
    other = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock, instance_id="b")
    stalled = asyncio.create_task(slow.run_once())
    await fake_wecom.state.wait_for_calls(MARK_TAG, 1)  # the slow dispatcher's call hangs
    clock.advance(61)  # its 60 s lease runs out
    assert await other.run_once() == 1
    assert await stalled == 1  # its call timed out; it tried to reschedule the command
    command = (await commands_by_key(session_factory))["tag:wm1"]
    assert (command.status, command.claimed_by, command.attempts) == (CommandStatus.DONE, "b", 2)
    assert command.last_error is None
    assert fake_wecom.state.marks == {("zhangsan", "wm1"): 1}


async def test_a_wakeup_published_by_another_process_starts_the_dispatcher(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    redis_backend: Backend,
) -> None:
    assert redis_backend.redis is not None
    client = redis_backend.client(fake_wecom, http_session)
    dispatcher = make_dispatcher(session_factory, client, clock, poll_interval=3600)
    await add_welcome(session_factory, clock, "c0")
    stop = asyncio.Event()
    subscribed = asyncio.Event()
    relay = relay_wakeups(redis_backend.redis, redis_backend.keys, dispatcher, stop, subscribed=subscribed)
    tasks = [asyncio.create_task(dispatcher.run(stop)), asyncio.create_task(relay)]
    publisher = aioredis.from_url(REDIS_URL)  # the worker process's own connection
    try:
        async with asyncio.timeout(30):
            await subscribed.wait()
            await fake_wecom.state.wait_for_calls(WELCOME, 1)  # c0 is sent: the loop now waits for a wake-up
            await add_welcome(session_factory, clock, "c1")
            await publish_wakeup(publisher, redis_backend.keys)
            await fake_wecom.state.wait_for_calls(WELCOME, 2)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await publisher.aclose()
    assert (await commands_by_key(session_factory))["welcome:c1"].status == CommandStatus.DONE
