"""The edge asks the Redis it will use as an inbox how it persists, and refuses one that would lose acknowledged
callbacks (issue 13, Deliver 9). Every Redis here is the test's own (tests/runtime/redis_server.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.inbox.durability import InboxNotDurable, read_persistence
from bot.inbox.sql import SqlInbox
from bot.runtime.assembly import Role, Runtime
from tests.conftest import (
    TEST_AES_KEY,
    TEST_CORP_ID,
    TEST_SECRET_KEY,
    TEST_TOKEN,
    create_sqlite_database,
    make_settings,
)
from tests.runtime.redis_server import AOF_EVERYSEC, VOLATILE, RedisServers, free_port, redis_servers

LIANYI = Path(sys.executable).with_name("lianyi")
NO_CONFIG = ("--rename-command", "CONFIG", "")  # how managed Redis services often run


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[RedisServers]:
    async with redis_servers(tmp_path / "redis") as start:
        yield start


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (VOLATILE, 'appendonly no, save "": nothing is kept on disk'),
        (("--appendonly", "no", "--save", "3600 1"), 'appendonly no, RDB snapshots only (save "3600 1")'),
        (("--appendonly", "yes", "--appendfsync", "no"), "appendfsync no: the OS flushes the AOF"),
        (("--appendonly", "no", *NO_CONFIG), "appendonly no: RDB snapshots alone lose"),
        (AOF_EVERYSEC, None),
        (("--appendonly", "yes", "--appendfsync", "always"), None),
        (("--appendonly", "yes", *NO_CONFIG), None),  # INFO says AOF; the fsync policy cannot be read
    ],
    ids=["nothing", "rdb-only", "fsync-no", "no-config-no-aof", "everysec", "always", "no-config-aof"],
)
async def test_what_counts_as_durable(servers: RedisServers, config: tuple[str, ...], problem: str | None) -> None:
    server = await servers(config)
    client = aioredis.from_url(server.url)
    try:
        persistence = await read_persistence(client)
    finally:
        await client.aclose()
    found = persistence.problem()
    assert found == problem if problem is None else (found or "").startswith(problem)
    assert (persistence.appendfsync is None) == (NO_CONFIG[0] in config)


def _serve_env(redis_url: str, database_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update(
        {
            "LIANYI_CORP_ID": TEST_CORP_ID,
            "LIANYI_CALLBACK_TOKEN": TEST_TOKEN,
            "LIANYI_CALLBACK_AES_KEY": TEST_AES_KEY,
            "LIANYI_SECRET_KEY": TEST_SECRET_KEY,
            "LIANYI_DATABASE_URL": database_url,
            "LIANYI_REDIS_URL": redis_url,
            "LIANYI_PORT": str(port),
            "LIANYI_LOG_JSON": "false",
            **extra,
        }
    )
    return env


async def test_serve_refuses_the_edge_on_a_redis_that_keeps_nothing(servers: RedisServers, tmp_path: Path) -> None:
    server = await servers(VOLATILE)
    env = _serve_env(server.url, await create_sqlite_database(tmp_path / "lianyi.db"), free_port())
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), "serve", "--roles", "edge", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b""
    lines = err.decode().splitlines()
    cli_line = [line for line in lines if line.startswith("Error: ")]
    assert len(cli_line) == 1 and cli_line == lines[-1:]  # one line for the operator, last
    for needed in (
        "appendonly yes",
        "appendfsync everysec",
        "LIANYI_INBOX_BACKEND=sql",
        "LIANYI_REDIS_ACCEPT_VOLATILE",
    ):
        assert needed in cli_line[0]
    assert "拒绝启动" in cli_line[0] and 'save ""' in cli_line[0]
    logged = [line for line in lines if "ERROR" in line]
    assert len(logged) == 1 and "refusing to start the callback edge" in logged[0] and "appendonly yes" in logged[0]
    assert "Traceback" not in err.decode()


async def test_serve_accepts_that_redis_when_the_risk_is_accepted(servers: RedisServers, tmp_path: Path) -> None:
    server = await servers(VOLATILE)
    port = free_port()
    database_url = await create_sqlite_database(tmp_path / "lianyi.db")
    env = _serve_env(server.url, database_url, port, LIANYI_REDIS_ACCEPT_VOLATILE="true")
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), "serve", "--roles", "edge", env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        status = None
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while status is None:
                assert proc.returncode is None, "serve exited"
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        status = resp.status
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        assert status == 200
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert proc.returncode == 0
    warning = [line for line in err.decode().splitlines() if "WARNING" in line and "does not persist" in line]
    assert len(warning) == 1 and "LIANYI_REDIS_ACCEPT_VOLATILE" in warning[0]


async def test_runtime_refusal_releases_what_it_opened(servers: RedisServers, tmp_path: Path) -> None:
    server = await servers(VOLATILE)
    settings = make_settings(redis_url=server.url, database_url=await create_sqlite_database(tmp_path / "l.db"))
    runtime = Runtime(settings=settings, roles=frozenset({Role.EDGE}))
    with pytest.raises(InboxNotDurable) as refused:
        await runtime.start()  # warnings are errors: an unclosed Redis client or engine would fail the test
    assert "appendonly yes" in str(refused.value) and "appendonly yes" in refused.value.message_zh


async def test_the_sql_inbox_needs_no_persistent_redis(servers: RedisServers, tmp_path: Path) -> None:
    server = await servers(VOLATILE)
    database_url = await create_sqlite_database(tmp_path / "l.db")
    settings = make_settings(redis_url=server.url, database_url=database_url, inbox_backend="sql")
    runtime = Runtime(settings=settings, roles=frozenset({Role.EDGE, Role.WORKER}))
    await runtime.start()
    try:
        assert isinstance(runtime.inbox, SqlInbox) and runtime.durability is None
        assert (await runtime.health())["redis"] == "ok"  # Redis still serves the locks, limits and token cache
    finally:
        await runtime.close()


async def test_a_worker_alone_does_not_check(servers: RedisServers, tmp_path: Path) -> None:
    """Only the edge acknowledges callbacks; a worker drains whatever Redis it is given."""
    server = await servers(VOLATILE)
    settings = make_settings(redis_url=server.url, database_url=await create_sqlite_database(tmp_path / "l.db"))
    runtime = Runtime(settings=settings, roles=frozenset({Role.WORKER}))
    await runtime.start()
    try:
        assert runtime.durability is None
    finally:
        await runtime.close()
