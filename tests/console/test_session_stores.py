"""One contract for the two session stores and the two sign-in throttles: the database (SQLite and PostgreSQL)
and Redis (used when LIANYI_REDIS_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from bot.redis_keys import RedisKeys
from bot.web.session_redis import RedisLoginThrottle, RedisSessionStore
from scrm.accounts.sessions import SessionStore, SqlSessionStore, session_digest
from scrm.accounts.throttle import ADDRESS_LIMIT, USER_LIMIT, WINDOW, LoginThrottle, SqlLoginThrottle
from scrm.db import SessionFactory
from scrm.models import UserRole
from tests.web_support import add_user

T0 = datetime.now(UTC).replace(microsecond=0)  # Redis expires keys by its own clock
HOURS_12 = timedelta(hours=12)


@pytest.fixture(params=["sql", "redis"])
async def stores(
    request: pytest.FixtureRequest, session_factory: SessionFactory, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[SessionStore, LoginThrottle, list[int]]]:
    """A session store and a throttle of each kind, with two users (their ids) in the database."""
    users = [await add_user(session_factory, name, UserRole.OPERATOR.value, password=None) for name in ("u1", "u2")]
    if request.param == "sql":
        yield SqlSessionStore(session_factory), SqlLoginThrottle(session_factory), users
        return
    client = aioredis.from_url(redis_url)
    keys = RedisKeys(redis_prefix)
    try:
        yield RedisSessionStore(client, keys), RedisLoginThrottle(client, keys), users
    finally:
        await client.aclose()


Stores = tuple[SessionStore, LoginThrottle, list[int]]


async def test_a_session_lives_until_it_expires_and_stores_only_a_digest(stores: Stores) -> None:
    sessions, _, (u1, _) = stores
    session_id, info = await sessions.create(
        u1, now=T0, lifetime=HOURS_12, user_agent="Mozilla" * 40, client_digest="d"
    )
    assert info.id_digest == session_digest(session_id) != session_id
    assert len(info.user_agent) == 128
    found = await sessions.get(session_id, T0 + timedelta(minutes=5))
    assert found is not None and (found.user_id, found.expires_at) == (u1, T0 + HOURS_12)
    assert found.last_seen_at == T0 + timedelta(minutes=5)
    assert await sessions.get(session_id, T0 + HOURS_12) is None
    assert await sessions.get(session_id + "x", T0) is None
    second, _ = await sessions.create(u1, now=T0, lifetime=HOURS_12, user_agent="", client_digest="d")
    assert second != session_id


async def test_sessions_are_revoked_one_a_user_or_all(stores: Stores) -> None:
    sessions, _, (u1, u2) = stores
    made = {}
    for name, user in (("a", u1), ("b", u1), ("c", u1), ("d", u2), ("e", u2)):
        made[name], _ = await sessions.create(user, now=T0, lifetime=HOURS_12, user_agent=name, client_digest="")
    later = T0 + timedelta(minutes=1)
    assert {s.user_agent for s in await sessions.of_user(u1, later)} == {"a", "b", "c"}
    await sessions.revoke(made["a"], later)
    assert await sessions.get(made["a"], later) is None
    assert {s.user_agent for s in await sessions.of_user(u1, later)} == {"b", "c"}
    assert await sessions.revoke_user(u1, later) == 2
    assert await sessions.get(made["b"], later) is None and await sessions.get(made["c"], later) is None
    assert await sessions.of_user(u1, later) == []
    assert await sessions.get(made["d"], later) is not None
    assert await sessions.revoke_all(later) == 2
    assert await sessions.get(made["d"], later) is None and await sessions.get(made["e"], later) is None


async def test_failures_throttle_a_username_and_an_address(stores: Stores) -> None:
    _, throttle, _ = stores
    for n in range(USER_LIMIT):
        assert not await throttle.blocked("Alice", "10.0.0.1", T0)
        await throttle.record_failure("alice", f"10.0.0.{n + 1}", T0 + timedelta(seconds=n))
    at = T0 + timedelta(minutes=1)
    assert await throttle.blocked(" ALICE ", "10.9.9.9", at)  # the username, however it is typed
    assert not await throttle.blocked("bob", "10.0.0.1", at)
    assert not await throttle.blocked("alice", "10.0.0.1", T0 + WINDOW + timedelta(seconds=1))  # aged out
    await throttle.clear_user("alice")
    assert not await throttle.blocked("alice", "10.9.9.9", at)
    for n in range(ADDRESS_LIMIT):
        assert not await throttle.blocked("someone", "192.0.2.7", at)
        await throttle.record_failure(f"user{n}", "192.0.2.7", at)
    assert await throttle.blocked("anyone", "192.0.2.7", at)
    await throttle.clear_user("anyone")
    assert await throttle.blocked("anyone", "192.0.2.7", at)  # a success elsewhere does not clear an address
    assert not await throttle.blocked("anyone", "192.0.2.8", at)
