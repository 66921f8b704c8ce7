"""End to end, with a virtual clock: 300 customers through the shipped welcome + nurture template against the
emulator — every message once, on time, never in quiet hours, within the caps and WeCom's group-send quota, and
exit conditions stopping what was still pending.

The customers add their advisors through real callbacks (welcome codes, the real edge and worker) on a Monday
evening, partly inside the quiet hours. A second, lower-priority template (``tests/e2e/sop_folder``) runs beside
the nurture and is built to collide with the policy: a message three hours after the add (in quiet hours for
evening adds), two the next afternoon (over the daily cap) and one four days later, on the Saturday (over the
weekly cap). The test then ticks the engine every 15 virtual minutes for nine days and reads the emulator's
delivery records.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path

import pytest

from bot.emulator.clock import VirtualClock
from bot.emulator.groupmsg_records import RECIPIENT_QUOTA_HIT, RECIPIENT_SENT, GroupSendQuota, QuotaMode
from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from bot.runtime.assembly import Role
from scrm.db import write_transaction
from scrm.db_types import utcnow
from scrm.lifecycle import change_stage
from scrm.models import SopStepRun
from tests.e2e.sop_world import (
    CAP_PER_DAY,
    CAP_PER_WEEK,
    Customer,
    SopWorld,
    busiest,
    cap_full_at,
    china,
    due,
    in_quiet_hours,
    next_allowed_minute,
    overtaken,
    plan_customers,
    sop_folder,
    upcoming,
    wall_time_on_or_after,
)

pytestmark = pytest.mark.slow

CUSTOMERS = 300
MONDAY, EVENING = 1, time(18, 0)
NURTURE, FOLLOWUP = "new_customer_nurture", "advisor_followup"
FOLLOWUP_STEPS = ("first_evening", "next_afternoon", "next_late_afternoon", "weekend_offer")
FOLLOWED_CHANNELS = frozenset({"qr", "ad"})  # advisor_followup.yaml: trigger.channel
# the shipped nurture: step → (after, at)
NURTURE_TIMING = {"day1": (timedelta(hours=10), time(10)), "day7": (timedelta(days=6, hours=10), time(10))}
DAY3 = (timedelta(days=2, hours=10), time(10))
WELCOME_WINDOW = 20.0
SOP_PROGRESS_TAGS = ["首周培育完成", "已发战败召回", "已发沉默唤醒"]


def _stack(database_url: str, redis_url: str, redis_prefix: str, folder: Path, clock: VirtualClock) -> LocalStack:
    return LocalStack(
        scenario=load_scenario(),
        database_url=database_url,
        redis_url=redis_url if database_url.startswith("postgresql") else "",
        redis_prefix=redis_prefix,
        # the test is the scheduler: it ticks the SOP engine itself after every move of the clock
        roles=frozenset({Role.EDGE, Role.WORKER, Role.DISPATCHER}),
        settings_overrides={"log_json": False, "sop_dir": str(folder)},
        clock=clock,
    )


def _monday_evening_clock() -> VirtualClock:
    """A clock at the next Monday 18:00 China time: never behind the wall clock, and the run crosses quiet hours
    and a week boundary (the outbox stamps ``not_before`` with the wall clock)."""
    start = upcoming(utcnow() + timedelta(minutes=1), weekday=MONDAY, wall=EVENING)
    return VirtualClock(start.timestamp())


async def _add_in_batches(world: SopWorld, customers: list[Customer], until: datetime) -> None:
    """Add the customers in equal batches, one batch per tick from now until ``until``."""
    slots = int((until - world.now()) / world.tick) + 1
    per_slot = -(-len(customers) // slots)
    for start in range(0, len(customers), per_slot):
        await world.add(customers[start : start + per_slot])
        world.clock.advance(world.tick.total_seconds())
        await world.run_tick()


def _runs_by_customer(
    runs: list[SopStepRun], enrolment_subjects: dict[int, tuple[str, str]]
) -> dict[str, dict[str, SopStepRun]]:
    found: dict[str, dict[str, SopStepRun]] = {}
    for run in runs:
        template, subject = enrolment_subjects[run.enrolment_id]
        found.setdefault(subject, {})[f"{template}.{run.step_id}"] = run
    return found


def _messages(runs: dict[str, SopStepRun], template: str) -> list[SopStepRun]:
    """One customer's private messages of ``template`` that were sent."""
    return [
        r
        for key, r in runs.items()
        if key.startswith(f"{template}.") and r.action == "private_message" and r.outcome == "sent"
    ]


def _templates_of(channel: str) -> set[str]:
    return {NURTURE, FOLLOWUP} if channel in FOLLOWED_CHANNELS else {NURTURE}


@pytest.mark.timeout(300)  # ~80 s alone; room for a loaded machine
async def test_300_customers_through_welcome_and_nurture(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    clock = _monday_evening_clock()
    start = clock.utcnow()
    async with _stack(pg_url, redis_url, redis_prefix, sop_folder(tmp_path / "sop"), clock) as stack:
        stack.state.put_tag_group("SOP进度", SOP_PROGRESS_TAGS)
        await stack.seed_dealers()
        await stack.full_sync()
        world = SopWorld(stack, clock)
        customers = plan_customers(stack.state, CUSTOMERS)
        # Monday 18:00 → Tuesday 01:45, one batch every 15 minutes: the batches from 21:00 on add in quiet hours
        await _add_in_batches(world, customers, start + timedelta(hours=7, minutes=45))

        # Wednesday noon: after day 1, before day 3 — 30 customers leave three ways
        await world.advance_to(start + timedelta(days=1, hours=18))
        leaving = [customers[i * 10 + i % 10] for i in range(30)]  # every channel among them
        owners, lost, deleted = leaving[:10], leaving[10:20], leaving[20:]
        exit_at = world.now()
        services = stack.runtime.services  # what the process's own handlers pass as hooks
        async with write_transaction(world.session_factory) as session:
            for customer in owners:
                await change_stage(
                    session, stack.state.corp_id, customer.external_userid, "owner", at=exit_at, hooks=services
                )
            for customer in lost:
                await change_stage(
                    session, stack.state.corp_id, customer.external_userid, "lost", at=exit_at, hooks=services
                )
        await world.delete_staff(deleted)

        # to the Tuesday after next, noon: past day 7 of the last customers and the weekend offers deferred to Monday
        await world.advance_to(start + timedelta(days=8, hours=18))

        runs = await world.step_runs()
        enrolments = await world.enrolments()
        deliveries = world.deliveries()
        state = stack.state

    subjects = {e.id: (e.template_id, e.subject_id) for e in enrolments if e.id is not None}
    by_customer = _runs_by_customer(runs, subjects)
    left = {
        c.external_userid: reason
        for group, reason in ((owners, "stage:owner"), (lost, "stage:lost"), (deleted, "contact_deleted"))
        for c in group
    }
    staying = [c for c in customers if c.external_userid not in left]
    channels = {c.external_userid: c.channel for c in customers}
    ended: dict[str, set[tuple[str, str, str | None]]] = {}  # customer → (template, status, end reason)
    for e in enrolments:
        ended.setdefault(e.subject_id, set()).add((e.template_id, e.status, e.end_reason))
    assert sum(in_quiet_hours(world.added_at[c.external_userid]) for c in customers) > CUSTOMERS // 2

    # the welcome: once per customer, within 20 s of the add, quiet hours or not
    welcomes = {w.external_userid: w for w in state.counters.welcomes}
    assert sorted(welcomes) == sorted(c.external_userid for c in customers)
    assert set(state.counters.welcome_sends.values()) == {1}
    for customer in customers:
        lag = welcomes[customer.external_userid].at - world.added_at[customer.external_userid].timestamp()
        assert 0 <= lag < WELCOME_WINDOW

    # nothing in quiet hours, caps held per customer, WeCom's quota never hit
    assert not [d for ds in deliveries.values() for d in ds if in_quiet_hours(d.at)]
    for customer_deliveries in deliveries.values():
        per_day, per_week = busiest(customer_deliveries)
        assert per_day <= CAP_PER_DAY and per_week <= CAP_PER_WEEK
    statuses = world.recipient_statuses()
    assert statuses[RECIPIENT_QUOTA_HIT] == 0 and set(statuses) == {RECIPIENT_SENT}

    # each message the engine sent reached the customer once, at the instant the step ran
    sent = [r for r in runs if r.outcome == "sent" and r.action == "private_message"]
    delivered_at = sorted((d.recipient, int(d.at)) for ds in deliveries.values() for d in ds)
    sent_at = sorted((subjects[r.enrolment_id][1], int(r.ran_at.timestamp())) for r in sent)
    assert delivered_at == sent_at
    assert len(await world.commands("add_msg_template")) == len(sent)

    # the nurture, customer by customer: every step once, at its due time
    for customer in staying:
        ext, added = customer.external_userid, world.added_at[customer.external_userid]
        steps = by_customer[ext]
        assert steps[f"{NURTURE}.welcome"].outcome == "sent" and steps[f"{NURTURE}.welcome"].ran_at == added
        referral = customer.channel == "referral"
        for step_id, timing in {**NURTURE_TIMING, ("day3_referral" if referral else "day3"): DAY3}.items():
            run = steps[f"{NURTURE}.{step_id}"]
            expected = wall_time_on_or_after(added + timing[0], timing[1])
            assert (run.outcome, run.due_at, run.ran_at) == ("sent", expected, expected), (ext, step_id)
        assert steps[f"{NURTURE}.{'day3' if referral else 'day3_referral'}"].reason == "when_false"
        assert steps[f"{NURTURE}.done"].outcome == "sent"
        follows = [f for (e, _), f in state.follows.items() if e == ext]
        assert [t.name for f in follows for t in state.all_tags() if t.id in f.tag_ids] == ["首周培育完成"]

    # the follow-up (QR and ad channels only): quiet hours move a step to 09:00; a full cap to the next day or week
    moved = {"quiet": 0, "day": 0, "week": 0, "blocked": 0}
    for customer in staying:
        ext = customer.external_userid
        if customer.channel not in FOLLOWED_CHANNELS:
            assert not [key for key in by_customer[ext] if key.startswith(f"{FOLLOWUP}.")]
            continue
        followups = [by_customer[ext][f"{FOLLOWUP}.{step_id}"] for step_id in FOLLOWUP_STEPS]
        for previous, run in zip([None, *followups], followups, strict=False):
            assert run.outcome == "sent", (ext, run.step_id, run.reason)
            allowed = next_allowed_minute(due(run))
            moved["quiet"] += allowed != due(run)
            if run.ran_at == allowed:
                continue
            # deferred: the cap was full when the step came due, or the step waited for the one before it
            assert run.ran_at > allowed and china(run.ran_at).time() == time(9, 0), (ext, run.step_id)
            full = cap_full_at(deliveries[ext], allowed, per_day=CAP_PER_DAY, per_week=CAP_PER_WEEK)
            blocked = previous is not None and previous.ran_at == run.ran_at
            assert full or blocked, (ext, run.step_id)
            moved[full or "blocked"] += 1
        assert overtaken(_messages(by_customer[ext], NURTURE), followups) == []
    assert moved["quiet"] and moved["day"] and moved["week"], moved

    # exits: nothing sent after the exit, every enrolment of the customer ended as exited with the reason
    for ext, reason in left.items():
        assert [d for d in deliveries.get(ext, []) if d.at >= exit_at.timestamp()] == []
        assert [r for r in by_customer[ext].values() if r.ran_at >= exit_at] == []
        assert ended[ext] == {(t, "exited", reason) for t in _templates_of(channels[ext])}
        assert f"{NURTURE}.day1" in by_customer[ext]  # they were mid-way
    for customer in staying:
        assert ended[customer.external_userid] == {
            (t, "completed", "all_steps") for t in _templates_of(customer.channel)
        }


async def test_tight_group_send_quota_defers_instead_of_hitting_wecom(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """WeCom set to one group send per customer per day, the policy told the same: the engine defers the rest
    (the nurture first, by priority) and WeCom never answers status 3."""
    clock = _monday_evening_clock()
    start = clock.utcnow()
    folder = sop_folder(tmp_path / "sop", policy={"group_send_quota": {"mode": "1_per_day"}})
    async with _stack(database_url, redis_url, redis_prefix, folder, clock) as stack:
        stack.state.groupmsg_quota = GroupSendQuota(QuotaMode.ONE_PER_DAY)
        stack.state.put_tag_group("SOP进度", SOP_PROGRESS_TAGS)
        await stack.seed_dealers()
        await stack.full_sync()
        world = SopWorld(stack, clock, tick=timedelta(minutes=30))
        customers = plan_customers(stack.state, 40, prefix="wm_quota")
        await _add_in_batches(world, customers, start + timedelta(hours=2))
        await world.advance_to(start + timedelta(days=9))
        runs = await world.step_runs()
        subjects = {e.id: (e.template_id, e.subject_id) for e in await world.enrolments() if e.id is not None}
        deliveries = world.deliveries()

    assert world.recipient_statuses()[RECIPIENT_QUOTA_HIT] == 0
    by_customer = _runs_by_customer(runs, subjects)
    for customer in customers:
        received = deliveries[customer.external_userid]
        assert busiest(received)[0] == 1  # one a day at most, and every customer got some
        assert not [d for d in received if in_quiet_hours(d.at)]
        mine = by_customer[customer.external_userid]
        assert overtaken(_messages(mine, NURTURE), _messages(mine, FOLLOWUP)) == []
        # every message went out in the end, on the day it fell due or on a later day
        messages = [r for r in mine.values() if r.action == "private_message" and r.reason != "when_false"]
        expected = 3 + (len(FOLLOWUP_STEPS) if customer.channel in FOLLOWED_CHANNELS else 0)
        assert len(messages) == expected and all(r.outcome == "sent" for r in messages)
        assert sorted(int(d.at) for d in received) == sorted(int(r.ran_at.timestamp()) for r in messages)
    deferred = [r for r in runs if r.outcome == "sent" and r.ran_at > next_allowed_minute(due(r))]
    assert len(deferred) >= len(customers)
