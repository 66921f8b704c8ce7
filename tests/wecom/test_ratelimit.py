"""One contract for both rate limiters (in-process and Redis sliding windows)."""

from __future__ import annotations

import pytest

from bot.wecom.errors import RateLimitedError
from bot.wecom.ratelimit import Rate
from tests.wecom.backends import Backend


class TestRateLimiterContract:
    async def test_allows_the_limit_then_says_how_long_to_wait(self, backend: Backend) -> None:
        limiter = backend.limiter()
        for _ in range(3):
            assert await limiter.try_acquire("b", 3, 60) == 0.0
            backend.clock.advance(10)
        # calls at t=0, 10, 20; now t=30: the first leaves the window at t=60
        assert await limiter.try_acquire("b", 3, 60) == pytest.approx(30.0)

    async def test_window_slides(self, backend: Backend) -> None:
        limiter = backend.limiter()
        assert await limiter.try_acquire("b", 2, 60) == 0.0
        backend.clock.advance(30)
        assert await limiter.try_acquire("b", 2, 60) == 0.0
        backend.clock.advance(30)  # the first call is exactly one period old: out of the window
        assert await limiter.try_acquire("b", 2, 60) == 0.0
        assert await limiter.try_acquire("b", 2, 60) == pytest.approx(30.0)

    async def test_buckets_are_independent(self, backend: Backend) -> None:
        limiter = backend.limiter()
        assert await limiter.try_acquire("a", 1, 60) == 0.0
        assert await limiter.try_acquire("b", 1, 60) == 0.0
        assert await limiter.try_acquire("a", 1, 60) > 0

    async def test_several_rates_are_taken_all_or_nothing(self, backend: Backend) -> None:
        limiter = backend.limiter()
        minute, hour = Rate("m", 2, 60), Rate("h", 3, 3600)
        assert await limiter.try_acquire_many([minute, hour]) == 0.0
        assert await limiter.try_acquire_many([minute, hour]) == 0.0
        assert await limiter.try_acquire_many([minute, hour]) == pytest.approx(60.0)  # refused by the minute
        backend.clock.advance(60)
        assert await limiter.try_acquire_many([minute, hour]) == 0.0  # the refusal consumed no hour slot
        backend.clock.advance(60)
        assert await limiter.try_acquire_many([minute, hour]) == pytest.approx(3600 - 120)

    async def test_acquire_waits_instead_of_refusing(self, backend: Backend) -> None:
        limiter = backend.limiter()
        start = backend.clock.now()
        for _ in range(3):
            await limiter.acquire("b", 2, 60)
        assert backend.clock.sleeps == [pytest.approx(60.0)]
        assert backend.clock.now() - start == pytest.approx(60.0)

    async def test_acquire_past_max_wait_raises_with_the_wait(self, backend: Backend) -> None:
        limiter = backend.limiter()
        await limiter.acquire("b", 1, 60)
        with pytest.raises(RateLimitedError) as info:
            await limiter.acquire_many([Rate("b", 1, 60)], max_wait=5)
        assert info.value.retry_after == pytest.approx(60.0)
        assert backend.clock.sleeps == []

    async def test_block_stops_an_api_and_never_shrinks(self, backend: Backend) -> None:
        limiter = backend.limiter()
        assert await limiter.blocked_for("/x") == 0.0
        await limiter.block("/x", 60)
        await limiter.block("/x", 5)
        assert await limiter.blocked_for("/x") == pytest.approx(60.0)
        assert await limiter.blocked_for("/y") == 0.0
        with pytest.raises(RateLimitedError) as info:
            await limiter.acquire_many([Rate("x", 100, 60)], api="/x", max_wait=10)
        assert info.value.retry_after == pytest.approx(60.0)
        await limiter.acquire_many([Rate("x", 100, 60)], api="/x")
        assert backend.clock.sleeps == [pytest.approx(60.0)]
        assert await limiter.blocked_for("/x") == 0.0


async def test_redis_limiters_share_windows_and_blocks_across_processes(redis_backend: Backend) -> None:
    backend = redis_backend
    one, two = backend.limiter(), backend.limiter()
    assert await one.try_acquire("b", 1, 60) == 0.0
    assert await two.try_acquire("b", 1, 60) == pytest.approx(60.0)
    await one.block("/api", 60)
    assert await two.blocked_for("/api") == pytest.approx(60.0)
