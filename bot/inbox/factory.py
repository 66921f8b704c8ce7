"""Choose the inbox backend from the settings: Redis Streams when ``LIANYI_REDIS_URL`` is set, else SQL.

``LIANYI_INBOX_BACKEND=sql`` keeps the inbox in the database even when Redis is configured (for the token cache,
rate limits, the leader lock), e.g. when that Redis does not persist (see :mod:`bot.inbox.durability`).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from bot.inbox.base import Inbox
from bot.inbox.redis_streams import RedisInbox
from bot.inbox.sql import SqlInbox
from bot.redis_keys import RedisKeys
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.errors import SettingsError


def inbox_uses_redis(settings: Settings) -> bool:
    return bool(settings.redis_url) and settings.inbox_backend != "sql"


def make_inbox(settings: Settings, *, session_factory: SessionFactory, redis: aioredis.Redis | None) -> Inbox:
    if inbox_uses_redis(settings):
        if redis is None:
            raise SettingsError("LIANYI_REDIS_URL is set but no Redis client was created for it")
        return RedisInbox(redis, RedisKeys(settings.redis_prefix), partitions=settings.inbox_partitions)
    return SqlInbox(session_factory, partitions=settings.inbox_partitions)
