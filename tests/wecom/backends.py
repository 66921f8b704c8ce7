"""The ``backend`` fixture: in-process or Redis token caches and limiters, and clients built on them.

Every contract test takes ``backend`` and so runs once per backend. Redis backends of one test share a
unique key prefix, so two instances built from one ``Backend`` behave like two processes of a deployment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.redis_keys import RedisKeys
from bot.settings import Settings
from bot.wecom.client import WeComClient
from bot.wecom.ratelimit import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from bot.wecom.token import InProcessTokenCache, RedisTokenCache, TokenCache
from tests.conftest import TEST_CORP_ID, make_settings
from tests.wecom.fake_api import SECRET, FakeClock, RunningFake


@dataclass
class Backend:
    name: str
    clock: FakeClock
    redis: aioredis.Redis | None
    keys: RedisKeys

    def token_cache(self, *, secret: str = SECRET, margin: float = 300.0) -> TokenCache:
        if self.redis is None:
            return InProcessTokenCache(clock=self.clock.now, margin=margin)
        return RedisTokenCache(
            self.redis, self.keys, corp_id=TEST_CORP_ID, secret=secret, clock=self.clock.now, margin=margin
        )

    def limiter(self) -> RateLimiter:
        if self.redis is None:
            return InProcessRateLimiter(clock=self.clock.now, sleep=self.clock.sleep)
        return RedisRateLimiter(self.redis, self.keys, clock=self.clock.now, sleep=self.clock.sleep)

    def settings(self, fake: RunningFake, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"wecom_api_base": fake.base_url, "redis_prefix": self.keys.prefix}
        values.update(overrides)
        return make_settings(**values)

    def client(
        self,
        fake: RunningFake,
        http: aiohttp.ClientSession,
        *,
        secret: str = SECRET,
        tokens: TokenCache | None = None,
        limiter: RateLimiter | None = None,
        timeout: float = 10.0,
        **settings: Any,
    ) -> WeComClient:
        return WeComClient(
            http=http,
            api_base=fake.base_url,
            corp_id=TEST_CORP_ID,
            secret=secret,
            tokens=tokens or self.token_cache(secret=secret),
            limiter=limiter or self.limiter(),
            settings=self.settings(fake, app_secret=secret, **settings),
            clock=self.clock.now,
            timeout=timeout,
        )


@pytest.fixture(params=["memory", "redis"])
async def backend(
    request: pytest.FixtureRequest, clock: FakeClock, redis_url: str, redis_prefix: str
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", clock, None, RedisKeys(redis_prefix))
        return
    client = aioredis.from_url(redis_url)
    try:
        yield Backend("redis", clock, client, RedisKeys(redis_prefix))
    finally:
        await client.aclose()


@pytest.fixture
async def redis_backend(clock: FakeClock, redis_url: str, redis_prefix: str) -> AsyncIterator[Backend]:
    """Only the Redis backend, for properties that exist only across processes."""
    client = aioredis.from_url(redis_url)
    try:
        yield Backend("redis", clock, client, RedisKeys(redis_prefix))
    finally:
        await client.aclose()


@pytest.fixture
def memory_backend(clock: FakeClock) -> Backend:
    """Only the in-process backend, for client behaviour that does not depend on the backend."""
    return Backend("memory", clock, None, RedisKeys("unused"))
