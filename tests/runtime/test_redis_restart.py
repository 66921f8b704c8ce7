"""Durable means durable (issue 13, attack 7): callbacks the edge acknowledged survive a restart of the Redis inbox.

Each test runs its own redis-server (tests/runtime/redis_server.py) and restarts it between the acknowledgement and
the processing: SIGKILL with ``appendfsync always`` (every acknowledged write is on disk), SHUTDOWN with
``everysec`` (a crash of the process or the machine may lose its last second or two, see the README). With AOF
every acknowledged event is processed exactly once; the same restart of a Redis that keeps nothing empties the
inbox, which is why the edge refuses such a Redis (test_redis_persistence.py) and, while running, stops
acknowledging when its Redis stops persisting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func
from sqlmodel import col, select

from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from bot.inbox.base import InboxItem
from bot.inbox.redis_streams import RedisInbox
from bot.redis_keys import RedisKeys
from bot.runtime.assembly import Role, Runtime
from scrm.db import SessionFactory
from scrm.models import Contact, DeadLetter, FollowRelation
from tests.conftest import create_sqlite_database
from tests.runtime.redis_server import AOF_ALWAYS, AOF_EVERYSEC, VOLATILE, RedisServer, RedisServers, redis_servers

CALLBACKS = 50
PREFIX = "wm_durable_"


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[RedisServers]:
    async with redis_servers(tmp_path / "redis") as start:
        yield start


def _edge_stack(database_url: str, server: RedisServer, **overrides: object) -> LocalStack:
    return LocalStack(
        scenario=load_scenario(),
        database_url=database_url,
        redis_url=server.url,
        roles=frozenset({Role.EDGE}),
        accept_volatile_redis=False,  # the edge checks its Redis as in production
        settings_overrides={"log_json": False, **overrides},
    )


async def _rows_per_customer(factory: SessionFactory) -> tuple[dict[str, int], dict[str, int], int]:
    """Contacts and live follow relations per external_userid of this test, and the dead letters."""
    async with factory() as session:
        contacts = await session.exec(
            select(Contact.external_userid, func.count())
            .where(col(Contact.external_userid).startswith(PREFIX))
            .group_by(Contact.external_userid)
        )
        follows = await session.exec(
            select(FollowRelation.external_userid, func.count())
            .where(col(FollowRelation.external_userid).startswith(PREFIX), col(FollowRelation.deleted_at).is_(None))
            .group_by(FollowRelation.external_userid)
        )
        dead = (await session.exec(select(func.count()).select_from(DeadLetter))).one()
    return dict(contacts.all()), dict(follows.all()), int(dead)


@pytest.mark.parametrize(
    ("config", "clean"), [(AOF_ALWAYS, False), (AOF_EVERYSEC, True)], ids=["always-sigkill", "everysec-shutdown"]
)
async def test_acknowledged_callbacks_survive_a_redis_restart_with_aof(
    servers: RedisServers, tmp_path: Path, config: tuple[str, ...], clean: bool
) -> None:
    server = await servers(config)
    stack = _edge_stack(await create_sqlite_database(tmp_path / "lianyi.db"), server)
    async with stack:
        await stack.seed_dealers()
        await stack.full_sync()
        state = stack.state
        staff = sorted(u for u, s in state.staff.items() if s.has_contact_permission)
        driver = stack.driver(retries=1)  # each callback is acknowledged at its first attempt or the test fails
        adds = [state.add_contact(staff[i % len(staff)], f"{PREFIX}{i:03d}", name=f"客户{i}") for i in range(CALLBACKS)]
        results = await asyncio.gather(*(driver.send(fields) for fields in adds))
        assert [r.status for r in results] == [200] * CALLBACKS
        assert await _rows_per_customer(stack.session_factory) == ({}, {}, 0)  # only the edge runs: none processed

        await server.restart(clean=clean)

        worker = Runtime(settings=stack.settings, roles=frozenset({Role.WORKER, Role.DISPATCHER}))
        await worker.start()
        try:
            await stack.wait_until_settled(within=120)
        finally:
            await worker.close()

        contacts, follows, dead = await _rows_per_customer(stack.session_factory)
        expected = {f"{PREFIX}{i:03d}": 1 for i in range(CALLBACKS)}
        assert {k: contacts.get(k) for k in expected if contacts.get(k) != 1} == {}  # each customer once
        assert {k: follows.get(k) for k in expected if follows.get(k) != 1} == {}
        assert (contacts, follows, dead) == (expected, expected, 0)
        assert all(n == 1 for n in state.counters.welcome_sends.values())  # no welcome code used twice
        assert await stack.runtime.inbox.backlog() == 0


def _item(n: int) -> InboxItem:
    return InboxItem(f"add:{n}", f"contact:{n}", "contact.added", "corp", {"n": n})


async def test_the_same_restart_empties_a_redis_that_keeps_nothing(servers: RedisServers) -> None:
    """The hazard the refusal guards against, with the restart procedure of the test above."""
    server = await servers(VOLATILE)
    client = aioredis.from_url(server.url)
    inbox = RedisInbox(client, RedisKeys("lianyi"))
    try:
        assert all([await inbox.put(_item(n)) for n in range(CALLBACKS)])
        assert await inbox.backlog() == CALLBACKS
        await server.restart()
        assert await inbox.backlog() == 0
    finally:
        await inbox.close()
        await client.aclose()


async def test_the_running_edge_stops_acknowledging_when_its_redis_stops_persisting(
    servers: RedisServers, tmp_path: Path
) -> None:
    server = await servers(AOF_EVERYSEC)
    stack = _edge_stack(
        await create_sqlite_database(tmp_path / "lianyi.db"), server, redis_durability_check_seconds=0.2
    )
    admin = aioredis.from_url(server.url)
    try:
        await _persistence_goes_and_comes_back(stack, admin)
    finally:
        await admin.aclose()


async def _persistence_goes_and_comes_back(stack: LocalStack, admin: aioredis.Redis) -> None:
    async with stack:
        guard = stack.runtime.durability
        assert guard is not None and guard.problem is None
        state = stack.state
        staff = sorted(u for u, s in state.staff.items() if s.has_contact_permission)
        driver = stack.driver(retries=1)
        before, during = (state.add_contact(staff[0], f"{PREFIX}{n}", name=f"客户{n}") for n in ("a", "b"))
        assert (await driver.send(before)).status == 200

        await admin.config_set("appendonly", "no")
        async with asyncio.timeout(30):
            while True:  # the guard re-reads every 0.2 s
                if guard.problem is not None:
                    break
                await asyncio.sleep(0.05)
        assert "appendonly no" in guard.problem
        refused = await driver.send(during)
        assert refused.status == 503  # WeCom retries it
        health = await stack.runtime.health()
        assert health["inbox_persistence"].startswith("error: appendonly no")

        await admin.config_set("appendonly", "yes")  # AOF is on once its first rewrite is done
        async with asyncio.timeout(30):
            while True:
                if guard.problem is None:
                    break
                await asyncio.sleep(0.05)
        assert (await driver.send(during)).status == 200  # WeCom's retry is taken now
        assert (await stack.runtime.health())["inbox_persistence"] == "ok"
        assert await stack.runtime.inbox.backlog() == 2


async def test_a_redis_restarted_without_persistence_is_refused_after_a_failed_put(
    servers: RedisServers, tmp_path: Path
) -> None:
    """The periodic check is an hour away here: the put that failed while Redis was down triggers the re-check."""
    server = await servers(AOF_EVERYSEC)
    stack = _edge_stack(
        await create_sqlite_database(tmp_path / "lianyi.db"), server, redis_durability_check_seconds=3600
    )
    async with stack:
        guard = stack.runtime.durability
        assert guard is not None and guard.problem is None
        staff = sorted(u for u, s in stack.state.staff.items() if s.has_contact_permission)
        driver = stack.driver(retries=1)
        first, second = (stack.state.add_contact(staff[0], f"{PREFIX}{n}", name=f"客户{n}") for n in ("a", "b"))
        assert (await driver.send(first)).status == 200

        await server.kill()
        server.config = VOLATILE  # it comes back on the same port, keeping nothing
        assert (await driver.send(second)).status == 503  # Redis is down
        await server.start()
        async with asyncio.timeout(30):
            while True:  # re-checked every second while refusing
                if guard.definite and guard.problem is not None:
                    break
                await asyncio.sleep(0.05)
        assert 'save ""' in guard.problem
        assert (await driver.send(second)).status == 503  # never acknowledged into the Redis that keeps nothing
        assert await stack.runtime.inbox.backlog() == 0
