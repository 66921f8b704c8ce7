"""End to end against the emulator: the default scenario through real callbacks leaves our database equal to
WeCom's state, with every welcome code used once within its 20 seconds and no duplicate side effect.

Runs on SQLite with in-process backends (the pilot deployment) and on PostgreSQL with the Redis inbox.
"""

from __future__ import annotations

import pytest

from bot.emulator.demo import run_demo_loop
from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from tests.e2e.db_view import comparable, database_snapshot, diff

pytestmark = pytest.mark.slow


def _stack(database_url: str, redis_url: str, redis_prefix: str) -> LocalStack:
    with_redis = database_url.startswith("postgresql")
    return LocalStack(
        scenario=load_scenario(),
        database_url=database_url,
        redis_url=redis_url if with_redis else "",
        redis_prefix=redis_prefix,
        settings_overrides={"log_json": False},
    )


async def test_default_scenario_mirrors_wecom(database_url: str, redis_url: str, redis_prefix: str) -> None:
    async with _stack(database_url, redis_url, redis_prefix) as stack:
        report = await run_demo_loop(stack)
        state = stack.state

        # the scenario is as big as the acceptance asks
        snapshot = state.snapshot()
        assert len(snapshot["contacts"]) >= 200
        assert sum(1 for s in snapshot["staff"].values() if s["contact_permission"]) >= 20
        assert len(snapshot["groups"]) + len(snapshot["dismissed_groups"]) >= 30
        assert report.scenario["by_action"].get("leave_group", 0) > 0
        assert report.scenario["by_action"].get("join_group", 0) > 0
        assert report.scenario["callbacks_failed"] == 0

        # the database equals the emulator's state
        actual = await database_snapshot(stack.session_factory, state.corp_id)
        assert diff(comparable(snapshot), comparable(actual)) == []

        # every welcome code used exactly once, within 20 s, never refused
        issued = {code.code: code for code in state.welcome_codes.all()}
        assert issued, "the scenario hands out welcome codes"
        assert dict(state.counters.welcome_sends) == dict.fromkeys(issued, 1)
        assert state.counters.welcome_rejections == {}
        assert all(0 <= ms < 20_000 for ms in report.welcome_latencies_ms)

        # no duplicate side effects: one welcome per code, no app message dropped
        assert sum(state.counters.messages_dropped.values()) == 0
        assert report.welcome_codes_reused == 0


async def test_replayed_callbacks_change_nothing(database_url: str, redis_url: str, redis_prefix: str) -> None:
    """WeCom retries: delivering every callback of a run a second time leaves the database as it was."""
    async with _stack(database_url, redis_url, redis_prefix) as stack:
        await stack.seed_dealers()
        await stack.full_sync()
        driver = stack.driver()
        sent: list[dict[str, object]] = []
        state = stack.state
        staff = [s for s in state.staff.values() if s.has_contact_permission][:5]
        for i, member in enumerate(staff):
            sent.append(state.add_contact(member.userid, f"wm_replay_{i}", name=f"客户{i}"))
        chat = state.create_group(staff[0].userid, "周末试驾群", members=[f"wm_replay_{i}" for i in range(3)])
        sent.append(chat)
        sent.append(state.leave_group(str(chat["ChatId"]), ["wm_replay_1"]))
        sent.append(state.staff_delete_contact(staff[1].userid, "wm_replay_1"))
        for fields in sent:
            assert (await driver.send(fields)).ok
        await stack.wait_until_settled()
        before = await database_snapshot(stack.session_factory, state.corp_id)
        welcomes_before = dict(state.counters.welcome_sends)
        for fields in sent:
            assert (await driver.send(fields)).ok
        await stack.wait_until_settled()
        assert await database_snapshot(stack.session_factory, state.corp_id) == before
        assert dict(state.counters.welcome_sends) == welcomes_before
        assert diff(comparable(state.snapshot()), comparable(before)) == []
