"""Scenarios: the shipped default loads, plans are deterministic for a seed, and so is the world they leave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.emulator.clock import ManualClock
from bot.emulator.scenario import ScenarioError, build_state, load_scenario, plan_steps, run_scenario
from scrm.channel import parse_state


def test_default_scenario_loads() -> None:
    scenario = load_scenario()
    state = build_state(scenario)
    assert state.dealers["BJ001"].name == "北京朝阳4S店"
    assert len(state.staff) >= 20 and len(list(state.all_tags())) == 12
    assert scenario.script and scenario.apps[0].agent_id == 1000002


def test_plan_is_deterministic_for_a_seed() -> None:
    scenario = load_scenario()
    first = plan_steps(scenario, build_state(scenario))
    again = plan_steps(scenario, build_state(scenario))
    other = plan_steps(scenario, build_state(scenario), seed=scenario.seed + 1)
    assert first == again
    assert first != other
    adds = [s for s in first if s.action in ("add_contact", "half_add") and s.kwargs["state"]]
    assert len({s.kwargs["external_userid"] for s in adds}) == 200
    for step in adds:
        info = parse_state(step.kwargs["state"])
        assert info.ours and info.dealer and info.advisor == step.kwargs["userid"]
        assert len(step.kwargs["state"]) <= 30


async def test_run_leaves_the_same_world_whatever_the_concurrency() -> None:
    scenario = load_scenario()
    snapshots = []
    for lanes in (1, 32):
        state = build_state(scenario, clock=ManualClock())
        report = await run_scenario(state, None, plan_steps(scenario, state), concurrency=lanes)
        assert report.world_errors == []
        snapshots.append(json.dumps(state.snapshot(), ensure_ascii=False, sort_keys=True))
    assert snapshots[0] == snapshots[1]


async def test_snapshot_shape() -> None:
    scenario = load_scenario()
    state = build_state(scenario, clock=ManualClock())
    await run_scenario(state, None, plan_steps(scenario, state))
    snap = state.snapshot()
    assert set(snap) == {"corp_id", "staff", "contacts", "follows", "groups", "dismissed_groups", "tag_groups"}
    json.dumps(snap)
    assert len(snap["contacts"]) == 200
    relations = sum(len(v) for v in snap["follows"].values())
    assert relations == len(state.follows)
    ext, by_user = next(iter(snap["follows"].items()))
    userid, follow = next(iter(by_user.items()))
    assert set(follow) == {"remark", "description", "state", "add_way", "half", "tags"}
    assert userid in snap["staff"] and ext in snap["contacts"]
    live = [g for g in state.groups.values() if not g.dismissed]
    assert len(snap["groups"]) == len(live) and len(snap["groups"]) + len(snap["dismissed_groups"]) == 30
    chat_id, group = next(iter(snap["groups"].items()))
    assert group["members"] == sorted(state.groups[chat_id].members)
    assert group["member_version"] == state.groups[chat_id].member_version
    assert set(group["customers"]) <= set(group["members"]) and group["owner"] in group["members"]
    activity = next(g for g in snap["tag_groups"].values() if g["name"] == "活动标签")
    assert len(activity["tags"]) == 3  # 4 created, 1 deleted


def test_bad_scenario_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "corp: {corp_id: ww1}\napps: [{secret: s, agent_id: 1}]\n"
        "dealers: [{code: BJ001, name: 北京}]\nscript: [{phase: add_customers, count: -1}]\n",
        "utf-8",
    )
    with pytest.raises(ScenarioError, match=r"bad.yaml: script\.0\.add_customers\.count"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
