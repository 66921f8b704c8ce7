"""The emulated 在职继承 APIs: transfer_customer's per-customer errcodes, transfer_result, and the takeover."""

from __future__ import annotations

from typing import Any

import pytest

from bot.edge.events import ContactAdded, ContactDeletedByStaff, TransferFailed, parse_event
from bot.emulator.clock import ManualClock
from bot.emulator.scenario import Scenario, build_state, load_scenario
from bot.emulator.state import EmulatorState
from tests.emulator.conftest import Api

DAY = 86_400
TRANSFER = "externalcontact/transfer_customer"
RESULT = "externalcontact/transfer_result"


def transfer_body(
    *customers: str, handover: str = "zhangwei", takeover: str = "wangfang", **extra: Any
) -> dict[str, Any]:
    return {"handover_userid": handover, "takeover_userid": takeover, "external_userid": list(customers), **extra}


async def transfer(api: Api, *customers: str, **extra: Any) -> dict[str, int]:
    answer = await api.call(TRANSFER, transfer_body(*customers, **extra))
    assert answer["errcode"] == 0, answer
    return {c["external_userid"]: c["errcode"] for c in answer["customer"]}


def advance(clock: ManualClock, api: Api, seconds: float) -> None:
    """Move the world's clock; the cached token has expired after a long jump, so fetch a new one."""
    clock.advance(seconds)
    api.token = ""


async def results(api: Api, handover: str = "zhangwei", takeover: str = "wangfang") -> dict[str, tuple[int, int]]:
    answer = await api.call(RESULT, {"handover_userid": handover, "takeover_userid": takeover, "cursor": ""})
    assert answer["errcode"] == 0, answer
    return {c["external_userid"]: (c["status"], c["takeover_time"]) for c in answer["customer"]}


def customer(state: EmulatorState, ext: str, userid: str = "zhangwei") -> str:
    state.add_contact(userid, ext, "李先生", welcome=False)
    return ext


async def test_per_customer_errcodes(api: Api, state: EmulatorState) -> None:
    mine = customer(state, "wmMine")
    theirs = customer(state, "wmTheirs", "wangfang")
    assert await transfer(api, mine, theirs, "wmNobody") == {mine: 0, theirs: 84061, "wmNobody": 40096}
    assert await transfer(api, mine) == {mine: 40129}  # in progress: the repeat starts nothing
    assert state.counters.transfers == {mine: 1}


async def test_the_takeover_happens_after_the_delay(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    ext = customer(state, "wmLi")
    tag_id = next(iter(state.all_tags())).id
    state.mark_tags_in_client("zhangwei", ext, add=[tag_id])
    assert await transfer(api, ext, transfer_success_msg="您好，我是张伟的同事王芳") == {ext: 0}
    start = clock.now()
    assert await results(api) == {ext: (2, int(start + DAY))}
    advance(clock, api, DAY - 1)
    assert state.settle_transfers() == []
    assert (ext, "zhangwei") in state.follows
    advance(clock, api, 1)
    assert await results(api) == {ext: (1, int(start + DAY))}
    callbacks = [parse_event(fields) for fields in state.settle_transfers()]
    assert state.settle_transfers() == []  # handed out once
    added, deleted = callbacks
    assert isinstance(added, ContactAdded) and (added.userid, added.external_userid) == ("wangfang", ext)
    assert isinstance(deleted, ContactDeletedByStaff)
    assert (deleted.userid, deleted.source) == ("zhangwei", "DELETE_BY_TRANSFER")
    assert (ext, "zhangwei") not in state.follows
    assert state.follows[(ext, "wangfang")].tag_ids == [tag_id]  # the relation moved with its tags


async def test_at_most_two_transfers_in_90_days(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    state.transfer_rules.delay_seconds = 60
    ext = customer(state, "wmTwice")
    assert await transfer(api, ext) == {ext: 0}
    advance(clock, api, 61)
    state.settle_transfers()
    assert await transfer(api, ext, handover="wangfang", takeover="zhangwei") == {ext: 0}
    advance(clock, api, 61)
    state.settle_transfers()
    assert await transfer(api, ext) == {ext: 40128}
    advance(clock, api, 90 * DAY)
    assert await transfer(api, ext) == {ext: 0}
    assert state.counters.transfers[ext] == 3
    assert state.counters.as_dict()["transfers"] == 3


@pytest.mark.parametrize("how", ["listed", "rate", "in_client"])
async def test_a_refusing_customer_stays(api: Api, state: EmulatorState, clock: ManualClock, how: str) -> None:
    ext = customer(state, "wmNo")
    if how == "listed":
        state.transfer_rules.refusing_customers.add(ext)
    elif how == "rate":
        state.transfer_rules.refusal_rate = 1.0
    await transfer(api, ext)
    if how == "in_client":
        (fail,) = [parse_event(state.refuse_transfer(ext))]
    else:
        advance(clock, api, DAY)
        (fail,) = [parse_event(fields) for fields in state.settle_transfers()]
    assert isinstance(fail, TransferFailed)
    assert (fail.userid, fail.external_userid, fail.fail_reason) == ("wangfang", ext, "customer_refused")
    assert (await results(api))[ext][0] == 3
    assert (ext, "zhangwei") in state.follows and (ext, "wangfang") not in state.follows


async def test_a_takeover_at_its_limit_gets_nobody(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    state.transfer_rules.customer_limit = 1
    customer(state, "wmAlready", "wangfang")
    ext = customer(state, "wmFull")
    await transfer(api, ext)
    advance(clock, api, DAY)
    (fail,) = [parse_event(fields) for fields in state.settle_transfers()]
    assert isinstance(fail, TransferFailed) and fail.fail_reason == "customer_limit_exceed"
    assert (await results(api))[ext][0] == 4


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (transfer_body(*[f"wm{i}" for i in range(101)]), 40058),
        (transfer_body(), 40058),
        (transfer_body("wmA", transfer_success_msg="字" * 201), 40058),
        (transfer_body("wmA", takeover="zhangwei"), 40058),
        (transfer_body("wmA", takeover="nobody"), 40003),
        (transfer_body("wmA", takeover="kefu"), 40003),  # no customer-contact permission
    ],
)
async def test_bad_calls(api: Api, state: EmulatorState, body: dict[str, Any], errcode: int) -> None:
    customer(state, "wmA")
    answer = await api.call(TRANSFER, body)
    assert answer["errcode"] == errcode
    assert state.transfers == []


async def test_200_characters_and_100_customers_are_fine(api: Api, state: EmulatorState) -> None:
    customers = [customer(state, f"wmOk{i}") for i in range(100)]
    codes = await transfer(api, *customers, transfer_success_msg="字" * 200)
    assert set(codes.values()) == {0} and len(codes) == 100


def test_scenario_sets_the_transfer_rules() -> None:
    data = load_scenario().model_dump()
    data["transfers"] = {"delay_seconds": 5, "refusing_customers": ["wmX"], "refusal_rate": 0.5, "customer_limit": 3}
    state = build_state(Scenario.model_validate(data), clock=ManualClock())
    rules = state.transfer_rules
    assert (rules.delay_seconds, rules.refusing_customers, rules.refusal_rate, rules.customer_limit) == (
        5,
        {"wmX"},
        0.5,
        3,
    )
