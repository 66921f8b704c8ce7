"""Leader election and idempotent ticks: two schedulers never double the work of one slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from sqlmodel import select

from bot.redis_keys import RedisKeys
from bot.runtime.leader import RedisLeader, SingleProcessLeader
from bot.runtime.scheduler import LeaderScheduler, TickSpec, maintenance_ticks
from scrm.db import SessionFactory, transaction
from scrm.models import Corp, CustomerGroup, OutboxCommand

CORP = "wwcorp"


async def test_only_one_redis_leader_and_failover_after_ttl(redis_url: str, redis_prefix: str) -> None:
    redis = aioredis.from_url(redis_url)
    key = RedisKeys(redis_prefix).leader_lock()
    first, second = RedisLeader(redis, key, ttl_seconds=0.5), RedisLeader(redis, key, ttl_seconds=0.5)
    try:
        assert await first.acquire_or_renew() is True
        assert await second.acquire_or_renew() is False
        assert await first.acquire_or_renew() is True  # renewal keeps it
        # the first leader stops renewing (paused or killed): the lock expires and the second takes over
        await asyncio.sleep(0.7)
        assert await second.acquire_or_renew() is True
        assert await first.acquire_or_renew() is False  # a stale leader learns it lost
        await second.release()
        assert await redis.get(key) is None
    finally:
        await redis.aclose()


async def test_release_does_not_drop_someone_elses_lock(redis_url: str, redis_prefix: str) -> None:
    redis = aioredis.from_url(redis_url)
    key = RedisKeys(redis_prefix).leader_lock()
    old, new = RedisLeader(redis, key, ttl_seconds=0.3), RedisLeader(redis, key, ttl_seconds=5)
    try:
        assert await old.acquire_or_renew()
        await asyncio.sleep(0.4)
        assert await new.acquire_or_renew()
        await old.release()
        assert await redis.get(key) is not None
    finally:
        await new.release()
        await redis.aclose()


async def _seed(session_factory: SessionFactory, now: datetime) -> None:
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id=CORP))
        await s.flush()
        s.add(CustomerGroup(corp_id=CORP, chat_id="wr_stale", synced_at=now - timedelta(days=2)))
        s.add(CustomerGroup(corp_id=CORP, chat_id="wr_fresh", synced_at=now - timedelta(minutes=5)))
        s.add(CustomerGroup(corp_id=CORP, chat_id="wr_gone", status="dismissed"))


async def test_two_leaders_ticking_the_same_slot_enqueue_once(session_factory: SessionFactory) -> None:
    now = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
    await _seed(session_factory, now)
    notified: list[int] = []
    schedulers = [
        LeaderScheduler(leader=SingleProcessLeader(), now=lambda: now, notify_outbox=lambda: notified.append(1))
        for _ in range(2)
    ]
    for scheduler in schedulers:
        await scheduler.renew()
        for tick in maintenance_ticks(session_factory, CORP):
            await scheduler.run_tick(tick)
    async with session_factory() as s:
        keys = sorted(c.idempotency_key for c in (await s.exec(select(OutboxCommand))).all())
    assert keys == ["tick:fetch_group:wr_stale:20260131", "tick:refresh_corp_tags:2026013123"]
    assert len(notified) == 4


async def test_a_follower_does_not_tick(session_factory: SessionFactory, redis_url: str, redis_prefix: str) -> None:
    redis = aioredis.from_url(redis_url)
    key = RedisKeys(redis_prefix).leader_lock()
    ran: list[datetime] = []

    async def record(now: datetime) -> None:
        ran.append(now)

    leader = LeaderScheduler(leader=RedisLeader(redis, key), now=lambda: datetime.now(UTC), notify_outbox=lambda: None)
    follower = LeaderScheduler(
        leader=RedisLeader(redis, key), now=lambda: datetime.now(UTC), notify_outbox=lambda: None
    )
    spec = TickSpec("record", 60, record)
    try:
        await leader.renew()
        await follower.renew()
        assert (leader.is_leader, follower.is_leader) == (True, False)
        await follower.run_tick(spec)
        assert ran == []
        await leader.run_tick(spec)
        assert len(ran) == 1
    finally:
        await leader.stop()
        await follower.stop()
        await redis.aclose()
