"""kill -9 a `lianyi serve` worker process while it holds unacknowledged events; a new process finishes the job.

The edge runs in the test process (PostgreSQL + the Redis inbox), the worker and outbox dispatcher run in a real
`lianyi serve --roles worker,dispatcher` subprocess that is SIGKILLed mid-run. After a second process takes over:
every event was processed exactly once in effect (the database equals the emulator's state, no duplicate rows or
commands) and each welcome code was used at most once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from bot.runtime.assembly import Role
from tests.e2e.db_view import comparable, database_snapshot, diff
from tests.e2e.serve_env import serve_env

pytestmark = pytest.mark.slow

LIANYI = Path(sys.executable).with_name("lianyi")
CUSTOMERS = 150


def _env(stack: LocalStack, instance: str) -> dict[str, str]:
    return serve_env(stack, instance, GROUP_REFETCH_DELAY="0.2", OUTBOX_LEASE_SECONDS="10")


async def _start_worker(stack: LocalStack, instance: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            str(LIANYI),
            "serve",
            "--roles",
            "worker,dispatcher",
            "--port",
            "0",
            env=_env(stack, instance),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def _pending_entries(redis: aioredis.Redis, stack: LocalStack) -> int:
    keys = stack.runtime.keys
    total = 0
    for lane in range(stack.settings.inbox_partitions):
        stream = keys.inbox_stream(lane)
        try:
            summary = await redis.xpending(stream, keys.inbox_group())
        except ResponseError:  # NOGROUP: nothing was ever put into this lane
            continue
        total += int(summary["pending"])
    return total


async def test_kill_9_worker_holding_events(pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    stack = LocalStack(
        scenario=load_scenario(),
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        roles=frozenset({Role.EDGE}),
        settings_overrides={"log_json": False},
    )
    redis = aioredis.from_url(redis_url)
    processes: list[asyncio.subprocess.Process] = []
    try:
        await _run_crash_scenario(stack, redis, tmp_path, processes)
    finally:
        for proc in processes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await redis.aclose()


async def _run_crash_scenario(
    stack: LocalStack, redis: aioredis.Redis, tmp_path: Path, processes: list[asyncio.subprocess.Process]
) -> None:
    async with stack:
        await stack.seed_dealers()
        await stack.full_sync()
        state = stack.state
        # WeCom answers slowly, so the dispatcher and the worker are mid-flight when the kill comes
        state.faults.set_latency(0.02, 0.02)
        staff = sorted(u for u, s in state.staff.items() if s.has_contact_permission)

        first = await _start_worker(stack, "crash-victim", tmp_path / "victim.log")
        processes.append(first)
        driver = stack.driver()
        events = [
            state.add_contact(staff[i % len(staff)], f"wm_crash_{i:04d}", name=f"客户{i}") for i in range(CUSTOMERS)
        ]
        sends = [asyncio.create_task(driver.send(fields)) for fields in events]

        # kill once the victim has done some of the work and still holds unacknowledged entries
        held = 0
        async with asyncio.timeout(60):
            while True:
                held = await _pending_entries(redis, stack)
                if sum(state.counters.welcome_sends.values()) >= 10 and held > 0:
                    break
                await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        welcomes_at_kill = sum(state.counters.welcome_sends.values())
        assert held > 0 and welcomes_at_kill < CUSTOMERS

        results = await asyncio.gather(*sends)
        assert all(r.ok for r in results)

        second = await _start_worker(stack, "crash-survivor", tmp_path / "survivor.log")
        processes.append(second)
        try:
            await stack.wait_until_settled(within=120)
        finally:
            second.send_signal(signal.SIGTERM)
            await second.wait()

        # each welcome code at most once; the codes the victim never reached were sent by the survivor
        assert all(n == 1 for n in state.counters.welcome_sends.values())
        assert sum(state.counters.welcome_sends.values()) > welcomes_at_kill
        # exactly once in effect: the database mirrors WeCom, one follow relation per customer
        actual = await database_snapshot(stack.session_factory, state.corp_id)
        assert diff(comparable(state.snapshot()), comparable(actual)) == []
        assert all(len(actual["follows"][f"wm_crash_{i:04d}"]) == 1 for i in range(CUSTOMERS))
        assert await stack.runtime.inbox.backlog() == 0
