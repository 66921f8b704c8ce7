"""Redis-only guarantees of the Streams inbox that the shared contract cannot express."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bot.inbox.base import InboxItem, InboxUnavailable, partition_for
from bot.inbox.redis_streams import RedisInbox
from bot.redis_keys import RedisKeys


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_a_failed_xadd_does_not_leave_the_dedup_key(client: aioredis.Redis, redis_prefix: str) -> None:
    keys = RedisKeys(redis_prefix)
    inbox = RedisInbox(client, keys, partitions=4)
    item = InboxItem("contact:a:1", "contact:a", "contact.added", "wwcorp", {"n": 1})
    lane_key = keys.inbox_stream(partition_for(item.ordering_key, 4))
    await client.set(lane_key, "not a stream")  # XADD on it fails with WRONGTYPE

    with pytest.raises(InboxUnavailable, match="WRONGTYPE"):
        await inbox.put(item)
    assert await client.exists(keys.inbox_dedup(item.dedup_key)) == 0  # WeCom's retry can still get in

    await client.delete(lane_key)
    assert await inbox.put(item) is True
    assert await client.xlen(lane_key) == 1
