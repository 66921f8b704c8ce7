"""A worker killed with SIGKILL while holding deliveries: another worker finishes the job, nothing lost or repeated.

Real processes (tests/worker/crash_worker.py) on PostgreSQL, with the Redis Streams inbox and the SQL inbox.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from bot.inbox.base import Inbox
from bot.inbox.redis_streams import RedisInbox
from bot.inbox.sql import SqlInbox
from bot.redis_keys import RedisKeys
from scrm.db import make_engine, make_session_factory
from tests.worker.callbacks import contact_added, inbox_item

SCRIPT = Path(__file__).with_name("crash_worker.py")
REPO = Path(__file__).resolve().parents[2]
LEASE = 1.0
CONTACTS = 8
EVENTS_PER_CONTACT = 3


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.lines: list[str] = []

    async def read_until(self, done: Callable[[list[str]], bool]) -> None:
        assert self.proc.stdout is not None
        while not done(self.lines):
            raw = await self.proc.stdout.readline()
            if not raw:
                raise AssertionError(f"worker exited early; stderr:\n{self.log.read_text()}")
            self.lines.append(raw.decode().strip())

    def count(self, prefix: str) -> int:
        return sum(1 for line in self.lines if line.startswith(prefix + " "))


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["redis", "sql"])
async def test_killed_worker_loses_nothing_and_repeats_nothing(
    backend_kind: str, pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    engine = make_engine(pg_url)
    client = aioredis.from_url(redis_url)
    inbox: Inbox = (
        RedisInbox(client, RedisKeys(redis_prefix), lease_seconds=LEASE)
        if backend_kind == "redis"
        else SqlInbox(make_session_factory(engine), lease_seconds=LEASE)
    )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE crash_effects (id serial PRIMARY KEY, dedup_key text NOT NULL, contact text NOT NULL,"
                " seq int NOT NULL, pid int NOT NULL)"
            )
        )
    for seq in range(EVENTS_PER_CONTACT):
        for c in range(CONTACTS):
            assert await inbox.put(inbox_item(contact_added(f"wm{c}", seq)))

    started: list[WorkerProcess] = []

    async def start(consumer: str, *extra: str) -> WorkerProcess:
        log = tmp_path / f"{consumer}.log"
        with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                f"--backend={backend_kind}",
                f"--database-url={pg_url}",
                f"--redis-url={redis_url}",
                f"--redis-prefix={redis_prefix}",
                f"--lease={LEASE}",
                f"--consumer={consumer}",
                *extra,
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        started.append(WorkerProcess(proc, log))
        return started[-1]

    try:
        async with asyncio.timeout(60):
            first = await start("worker-a", "--block-seq=1")
            # seq 0 of every contact is done; the worker now hangs inside the handler of every seq 1.
            await first.read_until(lambda _: first.count("blocked") == CONTACTS)
            first.proc.kill()
            assert await first.proc.wait() == -9

            second = await start("worker-b")
            remaining = CONTACTS * (EVENTS_PER_CONTACT - 1)
            await second.read_until(lambda _: second.count("handled") == remaining)
            second.proc.terminate()
            assert await second.proc.wait() == 0, second.log.read_text()

        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT dedup_key, contact, seq, pid FROM crash_effects ORDER BY id"))
            ).all()
        assert first.count("handled") == CONTACTS
        counts = Counter(row.dedup_key for row in rows)
        assert len(counts) == CONTACTS * EVENTS_PER_CONTACT  # none lost
        assert set(counts.values()) == {1}  # none repeated
        order: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            order[row.contact].append(row.seq)
        assert order == {f"wm{c}": list(range(EVENTS_PER_CONTACT)) for c in range(CONTACTS)}
        assert {row.pid for row in rows if row.seq == 0} == {first.proc.pid}
        assert {row.pid for row in rows if row.seq > 0} == {second.proc.pid}
        assert await inbox.claim("check", block_ms=0) == []
    finally:
        for worker in started:
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
        await inbox.close()
        await client.aclose()
        await engine.dispose()
