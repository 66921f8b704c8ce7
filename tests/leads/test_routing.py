"""Routing: every dealer rule and its fallback, sticky advisors, capacity, duty hours, round robin, opening
hours, idempotent handoff (SQLite and PostgreSQL)."""

from __future__ import annotations

from scrm.db import SessionFactory
from scrm.leads.escalation import run_sla_checks
from scrm.leads.rules import DealerOverride, HandoffRules, Routing, RoutingOverride
from scrm.leads.services import LeadServices
from tests.leads.routing_world import (
    add_contact,
    add_dealer,
    add_group,
    add_staff,
    cn,
    events,
    hand_off,
    lead_of,
    notifications,
    services,
)

NOON = cn(23, 12)


async def two_dealers(factory: SessionFactory) -> tuple[int, int]:
    sz = await add_dealer(factory, "SZ01", city="苏州")
    sh = await add_dealer(factory, "SH01", city="上海")
    for userid, dealer in (("sz_a", sz), ("sz_b", sz), ("sh_a", sh)):
        await add_staff(factory, userid, dealer)
    await add_staff(factory, "sz_m", sz, role="manager")
    await add_staff(factory, "brand", None, role="operator")
    return sz, sh


async def test_contact_way_state_picks_the_dealer(session_factory: SessionFactory, installed: LeadServices) -> None:
    _, sh = await two_dealers(session_factory)
    await add_contact(session_factory, "c1", dealer_code="SH01", says="我在苏州")
    lead = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert lead is not None
    assert (lead.dealer_id, lead.route_rule, lead.status, lead.advisor_userid) == (sh, "state", "assigned", "sh_a")


async def test_group_dealer_when_no_state(session_factory: SessionFactory, installed: LeadServices) -> None:
    sz, _ = await two_dealers(session_factory)
    await add_contact(session_factory, "c1", says="我在上海")
    await add_group(session_factory, "g1", sz, ("c1",))
    lead = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert lead is not None and (lead.dealer_id, lead.route_rule) == (sz, "group")


async def test_stated_city_when_no_state_or_group(session_factory: SessionFactory, installed: LeadServices) -> None:
    _, sh = await two_dealers(session_factory)
    await add_contact(session_factory, "c1", says="人在上海市浦东，周末能去看车吗")
    lead = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert lead is not None and (lead.dealer_id, lead.route_rule) == (sh, "city")
    async with session_factory() as session:
        from scrm.leads.assignment import contact_of

        contact = await contact_of(session, "wwroutecorp", "c1")
        assert contact is not None and contact.city == "上海"


async def test_unknown_dealer_code_falls_through_to_the_city(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    sz, _ = await two_dealers(session_factory)
    await add_contact(session_factory, "c1", dealer_code="XX99", says="苏州有店吗")
    lead = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert lead is not None and (lead.dealer_id, lead.route_rule) == (sz, "city")


async def test_nothing_matches_goes_to_the_pool(session_factory: SessionFactory, installed: LeadServices) -> None:
    await two_dealers(session_factory)
    await add_contact(session_factory, "c1", says="多少钱")
    lead = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert lead is not None
    assert (lead.dealer_id, lead.route_rule, lead.status, lead.advisor_userid) == (None, "pool", "pool", "")
    assert [n.kind for n in await notifications(session_factory, "op")] == ["pooled"]
    assert await events(session_factory, lead.id or 0) == ["created", "pooled"]


async def test_sticky_advisor_wins_over_fewer_open_leads(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    await two_dealers(session_factory)
    await add_contact(session_factory, "busy1", dealer_code="SZ01", follows=("brand", "sz_b"))
    first = await hand_off(session_factory, "busy1", NOON, leads=installed)
    assert first is not None and first.advisor_userid == "sz_b"  # sticky, though sz_a has fewer leads too
    await add_contact(session_factory, "c2", dealer_code="SZ01", follows=("brand", "sz_b"))
    second = await hand_off(session_factory, "c2", NOON, leads=installed)
    assert second is not None and second.advisor_userid == "sz_b" and second.reach == ""


async def test_fewest_open_leads_then_round_robin(session_factory: SessionFactory, installed: LeadServices) -> None:
    sz = await add_dealer(session_factory, "SZ01", city="苏州")
    for userid in ("a", "b", "c"):
        await add_staff(session_factory, userid, sz)
    picked = []
    for n in range(7):
        await add_contact(session_factory, f"c{n}", dealer_code="SZ01")
        lead = await hand_off(session_factory, f"c{n}", cn(23, 12, n), leads=installed)
        assert lead is not None
        picked.append(lead.advisor_userid)
    assert picked == ["a", "b", "c", "a", "b", "c", "a"]
    assert {lead.reach for lead in [await lead_of(session_factory, f"c{n}") for n in range(7)]} == {"invite"}


async def test_capacity_and_duty_hours_are_respected(session_factory: SessionFactory, installed: LeadServices) -> None:
    sz = await add_dealer(session_factory, "SZ01", city="苏州")
    await add_staff(session_factory, "full", sz, capacity=0)
    await add_staff(session_factory, "afternoon", sz, duty="mon-sun 13:00-18:00")
    await add_staff(session_factory, "free", sz, capacity=1)
    await add_staff(session_factory, "gone", sz, active=False)
    await add_staff(session_factory, "mgr", sz, role="manager")
    await add_contact(session_factory, "c1", dealer_code="SZ01")
    await add_contact(session_factory, "c2", dealer_code="SZ01")
    first = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert first is not None and first.advisor_userid == "free"
    second = await hand_off(
        session_factory, "c2", NOON, leads=installed
    )  # free is full now, afternoon is off duty at 12:00
    assert second is not None and (second.status, second.dealer_id, second.advisor_userid) == ("pool", sz, "")
    assert [n.kind for n in await notifications(session_factory, "mgr")] == ["pooled"]


async def test_outside_opening_hours_the_lead_waits_for_opening(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    await two_dealers(session_factory)
    await add_contact(session_factory, "c1", dealer_code="SZ01")
    lead = await hand_off(session_factory, "c1", cn(23, 22, 30), leads=installed)
    assert lead is not None and (lead.status, lead.advisor_userid, lead.next_check_at) == ("waiting", "", cn(24, 9))
    assert await notifications(session_factory) == [n for n in await notifications(session_factory) if n.userid == "x"]
    assert await run_sla_checks(session_factory, installed, cn(24, 8, 59, 59)) == 0
    assert await run_sla_checks(session_factory, installed, cn(24, 9)) == 1
    placed = await lead_of(session_factory, "c1")
    assert (placed.status, placed.advisor_userid, placed.assigned_at) == ("assigned", "sz_a", cn(24, 9))
    assert placed.sla_deadline_at == cn(24, 9, 5)
    assert [n.kind for n in await notifications(session_factory, "sz_a")] == ["new_lead"]


async def test_outside_hours_assign_counts_the_sla_in_opening_minutes(session_factory: SessionFactory) -> None:
    rules = HandoffRules(
        routing=Routing(reach="invite"),
        dealers={"SZ01": DealerOverride(routing=RoutingOverride(outside_hours="assign"))},
    )
    current = services(rules)
    await two_dealers(session_factory)
    await add_contact(session_factory, "c1", dealer_code="SZ01")
    lead = await hand_off(session_factory, "c1", cn(23, 22, 30), leads=current)
    assert lead is not None and lead.status == "assigned" and lead.sla_deadline_at == cn(24, 9, 5)
    assert lead.next_check_at == cn(24, 9, 5)


async def test_only_handoff_triggers_qualify_and_handoff_happens_once(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    await two_dealers(session_factory)
    await add_contact(session_factory, "c1", dealer_code="SZ01")
    assert await hand_off(session_factory, "c1", NOON, trigger="level_A", leads=installed) is None
    assert await hand_off(session_factory, "c1", NOON, trigger="level_H", leads=installed) is not None
    already_a_lead = await hand_off(session_factory, "c1", NOON, trigger="test_drive_booking", leads=installed)
    assert already_a_lead is None
    assert await hand_off(session_factory, "nobody", NOON, leads=installed) is None
    lead = await lead_of(session_factory, "c1")
    assert [n.key for n in await notifications(session_factory, "sz_a")] == [f"lead:{lead.id}:assign:1:sz_a"]


async def test_without_lead_services_nothing_is_handed_off(session_factory: SessionFactory) -> None:
    """A process whose services have no lead feature: the level change reaches no handoff."""
    await two_dealers(session_factory)
    await add_contact(session_factory, "c1", dealer_code="SZ01")
    assert await hand_off(session_factory, "c1", NOON, leads=None) is None


async def test_roster_members_wecom_never_reported_get_no_leads_until_sync_sees_them(
    session_factory: SessionFactory, installed: LeadServices
) -> None:
    from scrm.db import write_transaction
    from scrm.models import Staff
    from scrm.models.tenancy import ROSTER_UNMATCHED
    from scrm.sync.staff import upsert_staff

    sz = await add_dealer(session_factory, "SZ01", city="苏州")
    async with write_transaction(session_factory) as session:
        session.add(Staff(corp_id="wwroutecorp", userid="ghost", dealer_id=sz, extra={ROSTER_UNMATCHED: True}))
    await add_staff(session_factory, "real", sz)
    await add_contact(session_factory, "c1", dealer_code="SZ01")
    await add_contact(session_factory, "c2", dealer_code="SZ01")
    first = await hand_off(session_factory, "c1", NOON, leads=installed)
    assert first is not None and first.advisor_userid == "real"
    async with write_transaction(session_factory) as session:
        ghost = await upsert_staff(session, "wwroutecorp", "ghost", has_contact_permission=True)
        assert ROSTER_UNMATCHED not in (ghost.extra or {})
    second = await hand_off(session_factory, "c2", NOON, leads=installed)
    assert second is not None and second.advisor_userid == "ghost"  # fewer open leads than "real" now
