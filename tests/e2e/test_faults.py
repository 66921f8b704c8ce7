"""A bad day at WeCom, end to end: 10 % of calls answer -1, a burst of 45009 hits externalcontact/get, and every
token is invalidated mid-run. Every command still ends done, nothing is sent twice, and the database mirrors
WeCom's state. (The 45009 back-off is WeCom's 60 s, so this test waits just over a minute.)
"""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from scrm.models import CommandStatus, OutboxCommand
from tests.e2e.db_view import comparable, database_snapshot, diff

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CUSTOMERS = 60


async def test_busy_errors_frequency_burst_and_token_loss(pg_url: str, redis_url: str, redis_prefix: str) -> None:
    stack = LocalStack(
        scenario=load_scenario(),
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        settings_overrides={"log_json": False},
    )
    async with stack:
        await stack.seed_dealers()
        await stack.full_sync()
        state = stack.state
        staff = sorted(u for u, s in state.staff.items() if s.has_contact_permission)
        tokens_before = state.counters.api_calls["gettoken"]

        state.faults.set_error_rate("*", 0.10)
        driver = stack.driver()
        half = CUSTOMERS // 2
        for i in range(half):
            assert (await driver.send(state.add_contact(staff[i % len(staff)], f"wm_fault_{i:03d}"))).ok
        state.invalidate_all_tokens()
        # the second half arrives at once, so the burst hits concurrent calls (as it does at WeCom)
        state.faults.burst("externalcontact/get", count=3, errcode=45009)
        sends = [
            driver.send(state.add_contact(staff[i % len(staff)], f"wm_fault_{i:03d}")) for i in range(half, CUSTOMERS)
        ]
        assert all(r.ok for r in await asyncio.gather(*sends))
        await stack.wait_until_settled(within=150)

        injected = state.counters.faults_injected
        assert sum(n for (_, code), n in injected.items() if code == -1) > 0
        assert injected[("externalcontact/get", 45009)] == 3
        assert state.counters.api_calls["gettoken"] > tokens_before  # the token was refreshed mid-run

        async with stack.session_factory() as session:
            commands = (await session.exec(select(OutboxCommand))).all()
        assert {c.status for c in commands} == {CommandStatus.DONE.value}
        # nothing twice: each welcome code once, each contact fetched by exactly one command
        assert all(n == 1 for n in state.counters.welcome_sends.values())
        unsent = [
            (c.payload.get("welcome_code"), c.attempts, c.result, c.last_errcode)
            for c in commands
            if c.kind == "send_welcome" and c.payload.get("welcome_code") not in state.counters.welcome_sends
        ]
        assert unsent == [], (unsent, state.counters.welcome_rejections)
        issued = {code.code for code in state.welcome_codes.all()}  # none for staff with an admin welcome
        assert set(state.counters.welcome_sends) == issued and len(issued) > CUSTOMERS // 2
        actual = await database_snapshot(stack.session_factory, state.corp_id)
        assert diff(comparable(state.snapshot()), comparable(actual)) == []
