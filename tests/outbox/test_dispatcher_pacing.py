"""The dispatcher under its own rate limits: a call our per-API limiter cannot fit is postponed without spending
an attempt (so a group send is not reconciled as if its answer were lost), and a full class of commands keeps the
loop awake while its slots free up (no waiting for the next poll)."""

from __future__ import annotations

import asyncio

import aiohttp

from scrm.commands import CommandKind
from scrm.db import SessionFactory
from scrm.models import CommandStatus
from tests.outbox.support import add_command, commands_by_key, drain, make_dispatcher, tagging
from tests.wecom.backends import Backend
from tests.wecom.fake_api import EXT, FakeClock, RunningFake

MARK_TAG = f"{EXT}/mark_tag"


async def test_a_full_api_window_postpones_without_spending_attempts(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    for n in range(5):
        await add_command(session_factory, clock, CommandKind.MARK_TAG, f"tag:{n}", tagging(f"wm{n}"))
    client = memory_backend.client(fake_wecom, http_session, api_rate_per_minute=2)
    await drain(session_factory, clock, make_dispatcher(session_factory, client, clock))
    commands = await commands_by_key(session_factory)
    assert {c.status for c in commands.values()} == {CommandStatus.DONE}
    assert [c.attempts for c in commands.values()] == [1] * 5  # postponed, never retried
    assert fake_wecom.state.calls[MARK_TAG] == 5
    finished = sorted(c.finished_at for c in commands.values() if c.finished_at is not None)
    assert (finished[-1] - finished[0]).total_seconds() >= 2 * 61  # three windows of two calls


async def test_finishing_commands_wake_the_loop_while_their_class_is_backlogged(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    for n in range(8):
        await add_command(session_factory, clock, CommandKind.MARK_TAG, f"tag:{n}", tagging(f"wm{n}"))
    client = memory_backend.client(fake_wecom, http_session)
    # one slot for non-urgent commands, and a poll interval no test would wait for: only wake-ups move it on
    dispatcher = make_dispatcher(session_factory, client, clock, concurrency=4, batch=2, poll_interval=3600)
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run(stop))
    statuses: set[str] = set()
    try:
        for _ in range(1200):  # up to a minute of polling the database (the dispatcher's poll: an hour)
            statuses = {c.status for c in (await commands_by_key(session_factory)).values()}
            if statuses == {CommandStatus.DONE}:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await loop
    assert statuses == {CommandStatus.DONE}
    assert fake_wecom.state.calls[MARK_TAG] == 8
