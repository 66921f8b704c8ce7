"""Support for outbox tests against the WeCom emulator on one shared virtual clock (no real waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp
from redis.asyncio import Redis
from sqlalchemy import func
from sqlmodel import col, select

from bot.emulator.clock import VirtualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.wecom.client import WeComClient, build_wecom_client
from scrm.db import SessionFactory
from scrm.models import CommandStatus, OutboxCommand
from tests.conftest import TEST_CORP_ID, make_settings

SECRET = "test-secret"
AGENT_ID = 1000002
START = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def make_world(clock: VirtualClock) -> EmulatorState:
    state = EmulatorState(TEST_CORP_ID, clock=clock, seed=11)
    state.add_app(SECRET, AGENT_ID)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("brand", "品牌官方号")
    state.add_staff("zhangwei", "张伟", "BJ001")
    return state


@asynccontextmanager
async def served(state: EmulatorState) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(state)
    try:
        yield running
    finally:
        await running.close()


def make_client(
    emulator: RunningEmulator, http: aiohttp.ClientSession, clock: VirtualClock, redis: Redis | None, prefix: str
) -> WeComClient:
    settings = make_settings(
        wecom_api_base=emulator.base_url, app_secret=SECRET, agent_id=AGENT_ID, redis_prefix=prefix
    )
    return build_wecom_client(settings, http, redis, clock=clock.now)


def make_dispatcher(
    sessions: SessionFactory, client: WeComClient, clock: VirtualClock, name: str = "dispatcher-1"
) -> OutboxDispatcher:
    settings = make_settings(outbox_max_attempts=5)
    return OutboxDispatcher(sessions, client, settings, instance_id=name, clock=clock.utcnow)


async def run_until_idle(
    sessions: SessionFactory, clock: VirtualClock, *dispatchers: OutboxDispatcher, max_rounds: int = 200
) -> int:
    """Run the dispatchers until no command is pending, jumping the clock to each next due time; returns how
    many times the clock had to jump."""
    jumps = 0
    for _ in range(max_rounds):
        if sum(await asyncio.gather(*(dispatcher.run_once() for dispatcher in dispatchers))):
            continue
        async with sessions() as session:
            due = (
                await session.exec(
                    select(func.min(OutboxCommand.not_before)).where(
                        col(OutboxCommand.status) == CommandStatus.PENDING.value
                    )
                )
            ).one()
        if due is None:
            return jumps
        clock.set(max(due, clock.utcnow()))
        clock.advance(0.001)
        jumps += 1
    raise AssertionError(f"outbox not idle after {max_rounds} rounds")
