"""Fault injection (-1 at a rate, scripted 45009 bursts, latency) and the per-API 45009 block."""

from __future__ import annotations

from bot.emulator.clock import ManualClock
from bot.emulator.faults import FaultPlan
from bot.emulator.limits import ApiRateLimiter
from bot.emulator.state import EmulatorState
from tests.emulator.conftest import Api


async def test_error_rate_statistics(api: Api, state: EmulatorState) -> None:
    state.faults.set_error_rate("user/get", 0.3)
    answers = [(await api.call("user/get", userid="zhangwei"))["errcode"] for _ in range(600)]
    busy = answers.count(-1)
    assert set(answers) == {0, -1}
    assert 0.24 * 600 <= busy <= 0.36 * 600
    assert state.counters.faults_injected[("user/get", -1)] == busy
    assert (await api.call("externalcontact/get_follow_user_list"))["errcode"] == 0  # other APIs unaffected


def test_error_rate_is_reproducible_for_a_seed() -> None:
    def draws(seed: int) -> list[int | None]:
        plan = FaultPlan(seed)
        plan.set_error_rate("*", 0.5)
        return [plan.pick("user/get") for _ in range(50)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


async def test_scripted_burst_then_recovery(api: Api, state: EmulatorState) -> None:
    await api.call("user/get", userid="zhangwei")
    state.faults.burst("user/get", 3)
    answers = [(await api.call("user/get", userid="zhangwei"))["errcode"] for _ in range(5)]
    assert answers == [45009, 45009, 45009, 0, 0]
    state.faults.burst(count=1, errcode=45033)
    assert (await api.call("externalcontact/get_follow_user_list"))["errcode"] == 45033


def test_latency_is_fixed_plus_jitter() -> None:
    plan = FaultPlan(3)
    plan.set_latency(0.2, 0.1)
    delays = [plan.delay() for _ in range(200)]
    assert all(0.2 <= d <= 0.3 for d in delays)
    assert max(delays) - min(delays) > 0.05


async def test_rate_limit_blocks_for_60_seconds(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    state.rate_limits.set_limit("user/get", per_minute=5)
    answers = [(await api.call("user/get", userid="zhangwei"))["errcode"] for _ in range(6)]
    assert answers == [0] * 5 + [45009]
    clock.advance(59)
    assert (await api.call("user/get", userid="zhangwei"))["errcode"] == 45009  # still blocked
    clock.advance(2)
    assert (await api.call("user/get", userid="zhangwei"))["errcode"] == 0
    assert (await api.call("externalcontact/get_follow_user_list"))["errcode"] == 0  # per API
    assert state.counters.api_errors[("user/get", 45009)] == 2


def test_hour_limit_blocks_for_an_hour() -> None:
    limiter = ApiRateLimiter(per_minute=10_000, per_hour=10)
    now = 0.0
    allowed = 0
    for _ in range(12):
        allowed += limiter.allow("externalcontact/get", now)
        now += 61  # never more than one call a minute: only the hour limit applies
    assert allowed == 10
    assert limiter.blocked_until("externalcontact/get") == 10 * 61 + 3600
    assert not limiter.allow("externalcontact/get", 10 * 61 + 3599)
    assert limiter.allow("externalcontact/get", 10 * 61 + 3600)
