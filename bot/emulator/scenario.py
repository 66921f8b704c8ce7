"""Scenarios: a YAML description of a corp (dealers, staff, tags, apps) and a script of world actions.

``load_scenario(path)`` validates the file (one line per problem, naming the field); ``build_state``
creates the corp as it stood before the script; ``plan_steps`` turns the script into steps (deterministic
for a seed); ``run_scenario`` applies them to the state and sends each callback through a
:class:`~bot.emulator.callbacks.CallbackDriver`, one lane (customer / group / tag console) in order,
up to ``concurrency`` lanes at a time. The shipped ``default_scenario.yaml`` is a national brand's pilot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.emulator.base import Fields, WorldError
from bot.emulator.callbacks import CallbackDriver
from bot.emulator.clock import Clock
from bot.emulator.scenario_plan import ScriptPhase, Step, plan_script
from bot.emulator.state import EmulatorState
from scrm.errors import LianyiError

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = "default_scenario.yaml"


class ScenarioError(LianyiError):
    """A scenario file is unreadable or invalid; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpSpec(_Model):
    corp_id: str = Field(min_length=1, max_length=64)
    name: str = ""


class AppSpec(_Model):
    secret: str = Field(min_length=1)
    agent_id: int = Field(ge=0)
    contact_api: bool = True


class StaffSpec(_Model):
    userid: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    name: str = Field(min_length=1)
    position: str = "销售顾问"
    contact_permission: bool = True
    admin_welcome: bool = False


class DealerSpec(_Model):
    code: str = Field(pattern=r"^[A-Za-z0-9]{1,16}$")
    name: str = Field(min_length=1)
    city: str = ""
    staff: list[StaffSpec] = Field(default_factory=list)


class TagGroupSpec(_Model):
    name: str = Field(min_length=1)
    tags: list[str] = Field(min_length=1)
    order: int = 0
    strategy_id: int | None = None


class TransferSpec(_Model):
    """How customers answer 在职继承 transfers (see bot.emulator.actions_transfers)."""

    delay_seconds: float = Field(default=86_400.0, ge=0)
    refusing_customers: list[str] = Field(default_factory=list)
    refusal_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    customer_limit: int | None = Field(default=None, ge=0)


class Scenario(_Model):
    corp: CorpSpec
    apps: list[AppSpec] = Field(min_length=1)
    seed: int = 0
    concurrency: int = Field(default=8, ge=1, le=1000)
    dealers: list[DealerSpec] = Field(min_length=1)
    tag_groups: list[TagGroupSpec] = Field(default_factory=list)
    transfers: TransferSpec = Field(default_factory=TransferSpec)
    script: list[ScriptPhase] = Field(default_factory=list)


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a scenario file (``None``: the shipped default scenario)."""
    try:
        if path is None:
            text = resources.files("bot.emulator").joinpath(DEFAULT_SCENARIO).read_text("utf-8")
            where = DEFAULT_SCENARIO
        else:
            text, where = Path(path).read_text("utf-8"), str(path)
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(part) for part in err["loc"])
        raise ScenarioError(f"{where}: {loc}: {err['msg']}") from None
    userids = [s.userid for d in scenario.dealers for s in d.staff]
    duplicates = sorted({u for u in userids if userids.count(u) > 1})
    if duplicates:
        raise ScenarioError(f"{where}: dealers.staff: duplicate userids {duplicates}")
    if scenario.script and not any(s.contact_permission for d in scenario.dealers for s in d.staff):
        raise ScenarioError(f"{where}: dealers.staff: the script needs at least one advisor with contact permission")
    return scenario


def build_state(scenario: Scenario, *, clock: Clock | None = None, corp_id: str | None = None) -> EmulatorState:
    """The corp as it stands before the script runs (no callbacks for any of it)."""
    state = EmulatorState(corp_id or scenario.corp.corp_id, clock=clock, seed=scenario.seed)
    for app in scenario.apps:
        state.add_app(app.secret, app.agent_id, contact_api=app.contact_api)
    for dealer in scenario.dealers:
        state.add_dealer(dealer.code, dealer.name, dealer.city)
        for staff in dealer.staff:
            state.add_staff(
                staff.userid,
                staff.name,
                dealer.code,
                position=staff.position,
                has_contact_permission=staff.contact_permission,
                admin_welcome=staff.admin_welcome,
            )
    for group in scenario.tag_groups:
        state.put_tag_group(group.name, group.tags, order=group.order, strategy_id=group.strategy_id)
    rules = state.transfer_rules
    rules.delay_seconds = scenario.transfers.delay_seconds
    rules.refusing_customers = set(scenario.transfers.refusing_customers)
    rules.refusal_rate = scenario.transfers.refusal_rate
    rules.customer_limit = scenario.transfers.customer_limit
    return state


def plan_steps(scenario: Scenario, state: EmulatorState, seed: int | None = None) -> list[Step]:
    return plan_script(list(scenario.script), state, scenario.seed if seed is None else seed)


# ---- steps → world actions ------------------------------------------------------------------------


def _tag_in(state: EmulatorState, group_name: str, name: str) -> str:
    for group in state.tag_groups.values():
        if group.name == group_name:
            for tag in group.tags.values():
                if tag.name == name:
                    return tag.id
    raise WorldError(f"no tag {name!r} in group {group_name!r}")


def _group_named(state: EmulatorState, group_name: str) -> str:
    for group in state.tag_groups.values():
        if group.name == group_name:
            return group.group_id
    raise WorldError(f"no tag group {group_name!r}")


StepAction = Callable[..., Fields]
STEP_ACTIONS: dict[str, Callable[[EmulatorState], StepAction]] = {
    name: (lambda n: lambda state: getattr(state, n))(name)
    for name in (
        "add_contact",
        "half_add",
        "edit_remark",
        "mark_tags_in_client",
        "staff_delete_contact",
        "contact_deletes_staff",
        "create_group",
        "join_group",
        "leave_group",
        "rename_group",
        "change_notice",
        "change_owner",
        "dismiss_group",
        "create_tag_group",
    )
}
STEP_ACTIONS.update(
    {
        "create_tag_named": lambda s: lambda group_name, name: s.create_tag(_group_named(s, group_name), name),
        "rename_tag_named": lambda s: (
            lambda group_name, name, new_name: s.update_tag(_tag_in(s, group_name, name), name=new_name)
        ),
        "delete_tag_named": lambda s: lambda group_name, name: s.delete_tag(_tag_in(s, group_name, name)),
        "shuffle_group_named": lambda s: lambda group_name: s.shuffle_tags(_group_named(s, group_name)),
    }
)


def apply_step(state: EmulatorState, step: Step) -> Fields:
    """Perform one step on the state; returns the callback fields."""
    factory = STEP_ACTIONS.get(step.action)
    if factory is None:
        raise WorldError(f"unknown step action {step.action!r}")
    return factory(state)(**step.kwargs)


@dataclass(slots=True)
class ScenarioReport:
    steps: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    callbacks_ok: int = 0
    callbacks_failed: int = 0
    attempts: int = 0
    world_errors: list[str] = field(default_factory=list)
    delivery_errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "by_action": dict(sorted(self.by_action.items())),
            "callbacks_ok": self.callbacks_ok,
            "callbacks_failed": self.callbacks_failed,
            "attempts": self.attempts,
            "world_errors": len(self.world_errors),
            "elapsed_s": round(self.elapsed, 3),
        }


async def _run_lane(
    state: EmulatorState, driver: CallbackDriver | None, steps: list[Step], report: ScenarioReport
) -> None:
    for step in steps:
        try:
            fields = apply_step(state, step)
        except WorldError as exc:
            report.world_errors.append(f"{step.lane} {step.action}: {exc}")
            log.warning(
                "scenario step impossible", extra={"lane": step.lane, "action": step.action, "reason": str(exc)}
            )
            continue
        report.steps += 1
        report.by_action[step.action] += 1
        if driver is None:
            continue
        result = await driver.send(fields)
        report.attempts += result.attempts
        if result.ok:
            report.callbacks_ok += 1
        else:
            report.callbacks_failed += 1
            report.delivery_errors.append(f"{step.lane} {step.action}: {result.status} {result.error}")


async def run_scenario(
    state: EmulatorState,
    driver: CallbackDriver | None,
    steps: Sequence[Step],
    *,
    concurrency: int = 8,
) -> ScenarioReport:
    """Apply ``steps`` to ``state`` and send each callback (``driver=None``: only change the state)."""
    lanes: dict[str, list[Step]] = {}
    for step in steps:
        lanes.setdefault(step.lane, []).append(step)
    queue: asyncio.Queue[list[Step]] = asyncio.Queue()
    for lane_steps in lanes.values():
        queue.put_nowait(lane_steps)
    report = ScenarioReport()
    started = time.monotonic()

    async def worker() -> None:
        while not queue.empty():
            await _run_lane(state, driver, queue.get_nowait(), report)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, len(lanes)))):
            group.create_task(worker())
    report.elapsed = time.monotonic() - started
    return report
