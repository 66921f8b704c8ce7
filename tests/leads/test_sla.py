"""SLA ladder with an injected clock: each rung at its exact minute, accept in the last second stops it, one
notification per rung and per reassignment however often the tick runs, reassignments capped then the pool,
deadlines in opening minutes (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from scrm.db import SessionFactory, write_transaction
from scrm.leads.actions import perform
from scrm.leads.escalation import run_sla_checks
from scrm.leads.services import LeadServices
from scrm.leads.transitions import Action
from tests.leads.routing_world import (
    CORP,
    add_contact,
    add_dealer,
    add_staff,
    cn,
    events,
    hand_off,
    lead_of,
    notifications,
)

T0 = cn(23, 10)  # Monday 10:00 China time: accept due 10:05, manager 10:10, reassign 10:15


async def network(factory: SessionFactory, advisors: int = 4) -> None:
    sz = await add_dealer(factory, "SZ01", city="苏州")
    for n in range(advisors):
        await add_staff(factory, f"a{n}", sz)
    await add_staff(factory, "mgr", sz, role="manager")
    await add_contact(factory, "c1", dealer_code="SZ01")


async def tick(factory: SessionFactory, services: LeadServices, *times: object) -> None:
    for at in times:
        await run_sla_checks(factory, services, at)  # type: ignore[arg-type]


async def test_each_rung_fires_at_its_exact_minute(session_factory: SessionFactory, installed: LeadServices) -> None:
    await network(session_factory)
    lead = await hand_off(session_factory, "c1", T0, leads=installed)
    assert lead is not None and lead.advisor_userid == "a0" and lead.id is not None
    await tick(session_factory, installed, cn(23, 10, 4, 59))
    assert await events(session_factory, lead.id) == ["created", "assigned"]
    await tick(session_factory, installed, cn(23, 10, 5))
    assert (await events(session_factory, lead.id))[-1] == "sla_remind"
    assert [n.kind for n in await notifications(session_factory, "a0")] == ["new_lead", "remind"]
    await tick(session_factory, installed, cn(23, 10, 9, 59))
    assert [n.kind for n in await notifications(session_factory, "mgr")] == []
    await tick(session_factory, installed, cn(23, 10, 10))
    assert [n.kind for n in await notifications(session_factory, "mgr")] == ["escalation"]
    await tick(session_factory, installed, cn(23, 10, 14, 59))
    assert (await lead_of(session_factory, "c1")).advisor_userid == "a0"
    await tick(session_factory, installed, cn(23, 10, 15))
    moved = await lead_of(session_factory, "c1")
    assert (moved.advisor_userid, moved.status, moved.assignment_no, moved.reassign_count) == ("a1", "assigned", 2, 1)
    assert moved.sla_deadline_at == cn(23, 10, 20) and moved.next_check_at == cn(23, 10, 20)
    assert (await events(session_factory, lead.id))[-3:] == ["sla_reassign", "assigned", "reassigned"]


async def test_repeated_ticks_notify_nobody_twice(session_factory: SessionFactory, installed: LeadServices) -> None:
    await network(session_factory)
    await hand_off(session_factory, "c1", T0, leads=installed)
    for second in range(0, 16 * 60, 20):  # a tick every 20 s through the whole accept ladder, each run twice
        at = T0 + timedelta(seconds=second)
        await tick(session_factory, installed, at, at)
    keys = [n.key for n in await notifications(session_factory)]
    assert len(keys) == len(set(keys))
    by_user = {u: [n.kind for n in await notifications(session_factory, u)] for u in ("a0", "a1", "mgr")}
    assert by_user == {
        "a0": ["new_lead", "remind", "reassigned_away"],
        "a1": ["new_lead"],
        "mgr": ["escalation"],
    }


async def test_a_lead_accepted_in_the_last_second_is_not_escalated(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    await network(session_factory)
    lead = await hand_off(session_factory, "c1", T0, leads=installed)
    assert lead is not None and lead.id is not None
    async with write_transaction(session_factory) as session:
        await perform(session, installed, CORP, lead.id, Action.ACCEPT, actor="a0", now=cn(23, 10, 4, 59))
    await tick(session_factory, installed, cn(23, 10, 5), cn(23, 10, 10), cn(23, 10, 15))
    accepted = await lead_of(session_factory, "c1")
    assert (accepted.status, accepted.advisor_userid, accepted.sla_phase) == ("accepted", "a0", "contact")
    assert accepted.sla_deadline_at == cn(23, 10, 34, 59)
    assert not {"sla_remind", "sla_manager", "sla_reassign"} & set(await events(session_factory, lead.id))
    await tick(session_factory, installed, cn(23, 10, 34, 59))
    assert (await events(session_factory, lead.id))[-1] == "sla_remind"  # the contact SLA's own first rung


async def test_reassignments_are_capped_then_the_pool(session_factory: SessionFactory, installed: LeadServices) -> None:
    await network(session_factory)
    lead = await hand_off(session_factory, "c1", T0, leads=installed)
    assert lead is not None and lead.id is not None
    at = T0
    for _ in range(4 * 16):  # minute by minute, long past three full ladders
        at += timedelta(minutes=1)
        await tick(session_factory, installed, at)
    pooled = await lead_of(session_factory, "c1")
    assert (pooled.status, pooled.advisor_userid, pooled.reassign_count) == ("pool", "", 2)
    assert pooled.tried_advisors == ["a0", "a1", "a2"] and pooled.next_check_at is None
    kinds = await events(session_factory, lead.id)
    assert kinds.count("sla_reassign") == 2 and kinds.count("sla_pool") == 1
    assert [n.kind for n in await notifications(session_factory, "a3")] == []
    assert [n.kind for n in await notifications(session_factory, "a2")] == ["new_lead", "remind", "reassigned_away"]
    assert "pooled" in [n.kind for n in await notifications(session_factory, "mgr")]


async def test_deadlines_count_opening_minutes_only(session_factory: SessionFactory, installed: LeadServices) -> None:
    await network(session_factory)
    friday = cn(27, 17, 58)
    lead = await hand_off(session_factory, "c1", friday, leads=installed)
    assert lead is not None and lead.sla_deadline_at == cn(28, 9, 3)  # Saturday: the dealer opens every day
    await tick(session_factory, installed, cn(27, 23), cn(28, 9, 2, 59))
    assert (await lead_of(session_factory, "c1")).sla_step == 0
    await tick(session_factory, installed, cn(28, 9, 3))
    assert (await lead_of(session_factory, "c1")).sla_step == 1


async def test_weekend_closed_dealer_deadline_moves_to_monday(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    sz = await add_dealer(session_factory, "SZ02", city="苏州", hours="mon-fri 09:00-18:00")
    await add_staff(session_factory, "w0", sz)
    await add_contact(session_factory, "c9", dealer_code="SZ02")
    lead = await hand_off(session_factory, "c9", cn(27, 17, 58), leads=installed)
    assert lead is not None and lead.status == "assigned" and lead.sla_deadline_at == cn(30, 9, 3)
