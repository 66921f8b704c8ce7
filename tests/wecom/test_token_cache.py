"""One contract for both token caches (in-process and Redis)."""

from __future__ import annotations

import asyncio

import pytest

from bot.wecom.errors import FatalError
from bot.wecom.token import FetchedToken, RedisTokenCache, TokenCache, secret_fingerprint
from tests.conftest import TEST_CORP_ID
from tests.wecom.backends import Backend
from tests.wecom.fake_api import SECRET


class CountingFetcher:
    """A token source that hands out t1, t2, … and can be held open to pile up waiters."""

    def __init__(self, expires_in: int = 7200) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    async def __call__(self) -> FetchedToken:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return FetchedToken(f"t{self.calls}", self.expires_in)


class TestTokenCacheContract:
    async def test_fifty_concurrent_gets_refresh_once(self, backend: Backend) -> None:
        cache = backend.token_cache()
        fetch = CountingFetcher()
        fetch.release.clear()
        getters = [asyncio.create_task(cache.get(fetch)) for _ in range(50)]
        await fetch.entered.wait()
        fetch.release.set()
        tokens = await asyncio.gather(*getters)
        assert set(tokens) == {"t1"}
        assert fetch.calls == 1

    async def test_token_is_reused_until_the_safety_margin(self, backend: Backend) -> None:
        cache = backend.token_cache(margin=300)
        fetch = CountingFetcher(expires_in=7200)
        assert await cache.get(fetch) == "t1"
        backend.clock.advance(7200 - 300 - 1)
        assert await cache.get(fetch) == "t1"
        backend.clock.advance(2)
        assert await cache.get(fetch) == "t2"
        assert fetch.calls == 2

    async def test_invalidate_only_drops_the_stale_token(self, backend: Backend) -> None:
        cache = backend.token_cache()
        fetch = CountingFetcher()
        assert await cache.get(fetch) == "t1"
        await cache.invalidate("t1")
        assert await cache.get(fetch) == "t2"
        await cache.invalidate("t1")  # a late caller still holding t1 must not drop t2
        assert await cache.get(fetch) == "t2"
        await cache.invalidate()
        assert await cache.get(fetch) == "t3"

    async def test_a_failed_refresh_caches_nothing(self, backend: Backend) -> None:
        cache = backend.token_cache()

        async def refuse() -> FetchedToken:
            raise FatalError(40001, "invalid credential", "/cgi-bin/gettoken")

        with pytest.raises(FatalError):
            await cache.get(refuse)
        fetch = CountingFetcher()
        assert await cache.get(fetch) == "t1"


async def test_redis_caches_share_one_token_across_processes(redis_backend: Backend) -> None:
    backend = redis_backend
    first: TokenCache = backend.token_cache()
    second: TokenCache = backend.token_cache()  # another process: own local lock, same Redis keys
    fetch = CountingFetcher()
    fetch.release.clear()
    getters = [asyncio.create_task(cache.get(fetch)) for cache in [first, second] * 25]
    await fetch.entered.wait()
    fetch.release.set()
    assert set(await asyncio.gather(*getters)) == {"t1"}
    assert fetch.calls == 1


async def test_redis_key_names_the_corp_and_a_fingerprint_never_the_secret(redis_backend: Backend) -> None:
    backend = redis_backend
    assert backend.redis is not None
    cache = backend.token_cache()
    assert isinstance(cache, RedisTokenCache)
    await cache.get(CountingFetcher())
    keys = [key.decode() async for key in backend.redis.scan_iter(match=f"{backend.keys.prefix}:*")]
    assert keys == [backend.keys.access_token(TEST_CORP_ID, secret_fingerprint(SECRET))]
    assert SECRET not in keys[0]
    other_app = backend.token_cache(secret="another-app-secret")
    assert await other_app.get(CountingFetcher()) == "t1"  # a separate entry, fetched separately
