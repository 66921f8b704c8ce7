"""The per-member app-message guard: a burst to one advisor is spread over the following minutes, none dropped,
no attempt spent on waiting; several processes share the windows through Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlmodel import select

from bot.emulator.clock import VirtualClock
from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, transaction
from scrm.models import CommandStatus, OutboxCommand
from tests.conftest import TEST_CORP_ID
from tests.outbox.emulated_world import START, make_client, make_dispatcher, make_world, run_until_idle, served

BURST = 70
PER_MINUTE = 25  # LIANYI_MEMBER_MESSAGES_PER_MINUTE default


@pytest.fixture(params=["memory", "redis"])
async def redis(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Redis | None]:
    if request.param == "memory":
        yield None
        return
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def enqueue_messages(sessions: SessionFactory, clock: VirtualClock, count: int, **extra: object) -> None:
    async with transaction(sessions) as session:
        for i in range(count):
            await enqueue(
                session,
                corp_id=TEST_CORP_ID,
                kind=CommandKind.SEND_APP_MESSAGE,
                key=f"notify:{i}",
                payload={"touser": "zhangwei", "msgtype": "text", "text": {"content": f"新线索提醒 {i}"}},
                not_before=clock.utcnow(),
                **extra,  # type: ignore[arg-type]
            )


async def commands(sessions: SessionFactory) -> list[OutboxCommand]:
    async with sessions() as session:
        return list((await session.exec(select(OutboxCommand))).all())


async def test_a_burst_to_one_member_is_spread_and_nothing_is_dropped(
    session_factory: SessionFactory, redis: Redis | None, redis_prefix: str
) -> None:
    clock = VirtualClock(START.timestamp())
    state = make_world(clock)
    await enqueue_messages(session_factory, clock, BURST)
    async with served(state) as emulator, aiohttp.ClientSession() as http:
        # with Redis, two processes (two clients, two dispatchers) share the member's windows
        processes = 2 if redis is not None else 1
        dispatchers = [
            make_dispatcher(
                session_factory, make_client(emulator, http, clock, redis, redis_prefix), clock, f"process-{n}"
            )
            for n in range(processes)
        ]
        jumps = await run_until_idle(session_factory, clock, *dispatchers)
    rows = await commands(session_factory)
    assert {(row.status, row.attempts) for row in rows} == {(CommandStatus.DONE.value, 1)}
    assert state.counters.messages_delivered["zhangwei"] == BURST
    assert sum(state.counters.messages_dropped.values()) == 0
    times = sorted(message.at for message in state.counters.app_messages)
    windows = {int((at - times[0]) // 60) for at in times}
    assert len(windows) >= 3 and jumps >= 2
    # no 60 s window holds more than our limit (WeCom's is 30)
    assert max(sum(1 for t in times if start <= t < start + 60) for start in times) <= PER_MINUTE


async def test_a_message_that_cannot_get_a_slot_before_its_deadline_expires(
    session_factory: SessionFactory, redis_prefix: str
) -> None:
    clock = VirtualClock(START.timestamp())
    state = make_world(clock)
    await enqueue_messages(session_factory, clock, PER_MINUTE + 1, deadline=clock.utcnow() + timedelta(seconds=30))
    async with served(state) as emulator, aiohttp.ClientSession() as http:
        dispatcher = make_dispatcher(session_factory, make_client(emulator, http, clock, None, redis_prefix), clock)
        await run_until_idle(session_factory, clock, dispatcher)
    by_status: dict[str, list[OutboxCommand]] = {}
    for row in await commands(session_factory):
        by_status.setdefault(row.status, []).append(row)
    assert len(by_status[CommandStatus.DONE.value]) == PER_MINUTE
    (expired,) = by_status[CommandStatus.EXPIRED.value]
    assert "no slot before the deadline" in (expired.last_error or "")
    assert expired.attempts == 1  # the one claim that found no slot in time
    assert state.counters.messages_delivered["zhangwei"] == PER_MINUTE
