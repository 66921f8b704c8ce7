"""Issue 5 acceptance, end to end against the emulator: 500 contacts, 50 advisors (and 10 managers) at 10 dealers,
two `lianyi serve` processes with every role sharing PostgreSQL and Redis, and the emulator's people.

The roster comes in through `lianyi roster import`, the customers through a full sync of the emulated corp. A third
of the customers turn hot: most write buying questions that the shipped intent rules score H (posted to
``/ingest/messages`` as a chat-archive puller would), some book a test drive (``/ingest/behaviours``); requests
alternate between the two processes. The handoff.yaml of the run has a one-minute accept SLA in wall-clock
minutes (the processes run on the wall clock) and a ladder remind → manager → reassign at the deadline. One
advisor per dealer never accepts; the others accept within seconds and write to their customers (or, when the
customer is not yet their contact, press "contacted"), all through Lianyi's HTTP interfaces
(:mod:`bot.emulator.advisors`). The test waits on the database and the emulator's records, never on a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlmodel import col, select

from bot.emulator.advisors import NEVER_ACCEPTS, AdvisorProfile, EmulatedPeople, LianyiEndpoints
from bot.emulator.localstack import LocalStack
from bot.runtime.assembly import Role
from bot.web.auth import issue_staff_token
from scrm.db import write_transaction
from scrm.db_types import utcnow
from scrm.models import Contact, CustomerTransfer, Lead, LeadEvent, Staff
from scrm.models.accounts import UserRole
from tests.e2e import lead_world as world
from tests.e2e.lead_world import INGEST_TOKEN, POOL, RULE_OF, Customer
from tests.users_support import Account, add_accounts

pytestmark = pytest.mark.slow

DEALERS, CUSTOMERS = 10, 500
NEVER_INDEX = 4  # advisor 4 of every dealer never accepts
PER_REQUEST = 12  # customers per ingest request


def _profiles() -> dict[str, AdvisorProfile]:
    profiles: dict[str, AdvisorProfile] = {}
    for d in range(DEALERS):
        for a in range(world.ADVISORS_PER_DEALER):
            profile = NEVER_ACCEPTS
            if a != NEVER_INDEX:  # quick people, each a little different; advisor 3 never writes to the customer
                profile = AdvisorProfile(accept_after=1.0 + 0.5 * a + 0.1 * d, reply_after=None if a == 3 else 1.5)
            profiles[world.advisor_id(d, a)] = profile
    return profiles


async def _post(http: aiohttp.ClientSession, url: str, records: list[dict[str, Any]]) -> int:
    """POST one ingest batch like an archive puller: retried on a 5xx answer (the ingest is idempotent).
    Returns how many retries it took."""
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    for retry in range(4):
        async with http.post(url, json=records, headers=headers) as response:
            if response.status < 500:
                assert response.status == 200, await response.text()
                return retry
    raise AssertionError(f"{url} kept failing")


async def _warm_up(http: aiohttp.ClientSession, bases: Sequence[str], cold: Sequence[Customer]) -> None:
    """Once a process is up, a cold customer says hello through it (the first message loads its intent rules)."""
    for base, customer in zip(bases, cold, strict=True):
        await world.wait_healthy(http, base, within=30)
        hello = {"msgid": f"{customer.external_userid}-hello", "sent_at": time.time(), "text": "你好"}
        await _post(http, f"{base}/ingest/messages", [{**hello, "external_userid": customer.external_userid}])


def _batches(hot: Sequence[Customer]) -> list[list[Customer]]:
    """Hot customers by expected dealer (one dealer per request: requests on two processes never fight over
    two dealers' rows), PER_REQUEST at a time, dealers interleaved."""
    by_dealer: dict[str, list[Customer]] = defaultdict(list)
    for c in hot:
        by_dealer[c.expected_dealer].append(c)
    queues = [[cs[i : i + PER_REQUEST] for i in range(0, len(cs), PER_REQUEST)] for _, cs in sorted(by_dealer.items())]
    return [
        chunk
        for rank in range(max(map(len, queues)))
        for queue in queues
        if rank < len(queue)
        for chunk in queue[rank : rank + 1]
    ]


async def _ingest(
    http: aiohttp.ClientSession, bases: Sequence[str], hot: Sequence[Customer], never: set[str]
) -> tuple[dict[str, float], int]:
    """Make ``hot`` hot through both processes, three requests in flight; returns when each was posted, retries.

    Customers whose lead may land on a never-accepting advisor go first (the one-minute ladder runs from their
    assignment); the sticky customers of the other advisors and the pool follow while it runs."""
    posted: dict[str, float] = {}
    retries = 0
    may_ladder = [c for c in hot if c.route in ("brand_state", "group", "city") or c.added_by in never]
    batches = _batches(may_ladder) + _batches([c for c in hot if c not in may_ladder])
    gate = asyncio.Semaphore(3)

    async def one(n: int, batch: list[Customer]) -> None:
        nonlocal retries
        base = bases[n % len(bases)]
        async with gate:
            now = time.time()
            for c in batch:
                posted[c.external_userid] = now
            messages = [r for c in batch if c.hot == "messages" for r in c.hot_records(now)]
            bookings = [
                {"kind": "test_drive_booking", "external_userid": c.external_userid, "ref": f"bk-{c.index}", "at": now}
                for c in batch
                if c.hot == "booking"
            ]
            if messages:
                retries += await _post(http, f"{base}/ingest/messages", messages)
            if bookings:
                retries += await _post(http, f"{base}/ingest/behaviours", bookings)

    await asyncio.gather(*(one(n, batch) for n, batch in enumerate(batches)))
    return posted, retries


async def _read(stack: LocalStack) -> tuple[list[Lead], list[LeadEvent], list[CustomerTransfer], dict[str, str | None]]:
    async with stack.session_factory() as session:
        leads = list((await session.exec(select(Lead))).all())
        events = list((await session.exec(select(LeadEvent).order_by(col(LeadEvent.id)))).all())
        transfers = list((await session.exec(select(CustomerTransfer))).all())
        levels = dict((await session.exec(select(Contact.external_userid, Contact.intent_level))).all())
    return leads, events, transfers, levels


def _done(leads: list[Lead], hot: int, never: set[str], people: EmulatedPeople) -> bool:
    """Every hot customer is a lead, none waits for acceptance, nothing sits with a never-accepting advisor,
    and the people have nothing left to do."""
    if len(leads) < hot or people.busy:
        return False
    return all(lead.status not in ("assigned", "waiting") and lead.advisor_userid not in never for lead in leads)


def _dealer_of(advisor: str) -> int:
    """The dealer index in an advisor's userid (``ld03_adv1`` → 3)."""
    return int(advisor[2:4])


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


@pytest.mark.timeout(240)
async def test_lead_handoff_end_to_end(pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    started = time.monotonic()
    sop_dir = world.sop_folder(tmp_path / "sop")
    customers = world.plan_customers(CUSTOMERS, DEALERS)
    hot = [c for c in customers if c.hot]
    assert len(hot) >= 150 and {c.route for c in hot} == set(RULE_OF)
    profiles = _profiles()
    never = {u for u, p in profiles.items() if not p.accepts}
    stack = LocalStack(
        scenario=world.scenario(DEALERS),
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        roles=frozenset({Role.EDGE}),  # the two processes below do the work
        settings_overrides={"log_json": False, "sop_dir": str(sop_dir)},
    )
    processes: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()
    try:
        async with stack, aiohttp.ClientSession() as http:
            state = stack.state
            world.add_brand_staff(state)
            world.populate(state, customers, DEALERS)
            ports = [world.free_port(), world.free_port()]
            bases = [f"http://127.0.0.1:{port}" for port in ports]
            for n, port in enumerate(ports):
                env = world.lianyi_env(stack, sop_dir, f"lead-e2e-{n}")
                processes.append(await world.start_server(env, port, tmp_path / f"serve{n}.log"))
            await stack.full_sync()
            synced_seconds = time.monotonic() - started
            roster_file = tmp_path / "roster.yaml"
            roster_file.write_text(world.roster_yaml(DEALERS), "utf-8")
            roster_env = world.lianyi_env(stack, sop_dir, "roster")
            cold = [c for c in customers if not c.hot][: len(bases)]
            await add_accounts(stack.session_factory, (Account("brand_ops", UserRole.OPERATOR),))
            (code, output), _ = await asyncio.gather(
                world.run_cli(roster_env, "roster", "import", str(roster_file), "--as", "brand_ops"),
                _warm_up(http, bases, cold),
            )
            assert code == 0, output
            assert "新增门店 0" in output and "警告" not in output, output  # the sync made the dealers; nobody unknown

            async with write_transaction(stack.session_factory) as session:  # as `lianyi staff token` would
                staff = (await session.exec(select(Staff.userid).where(Staff.corp_id == state.corp_id))).all()
                tokens = {
                    userid: (
                        await issue_staff_token(
                            stack.settings, session, userid, lifetime=timedelta(hours=1), created_by="e2e", now=utcnow()
                        )
                    ).token
                    for userid in staff
                }
            endpoints = LianyiEndpoints(bases, tokens.__getitem__, INGEST_TOKEN)
            people = EmulatedPeople(state, endpoints, http, profiles)
            people_task = asyncio.create_task(people.run(stop))
            setup_seconds = time.monotonic() - started

            posted, retries = await _ingest(http, bases, hot, never)
            ingest_seconds = time.monotonic() - started - setup_seconds
            async with asyncio.timeout(150):
                while True:
                    leads, *_ = await _read(stack)
                    if _done(leads, len(hot), never, people):
                        break
                    await asyncio.sleep(0.5)
            done_seconds = time.monotonic() - started
            await stack.wait_until_settled(within=30)
            await people.step()
            stop.set()
            await people_task
            leads, events, transfers, levels = await _read(stack)
    finally:
        stop.set()
        await world.stop_servers(processes)
    for n in range(len(processes)):
        log_text = (tmp_path / f"serve{n}.log").read_text(errors="replace")
        assert "Traceback" not in log_text, log_text[-3000:]

    counters = state.counters

    # every hot customer has exactly one lead, nobody else has one; the message-hot ones reached level H
    assert sorted(lead.external_userid for lead in leads) == sorted(c.external_userid for c in hot)
    for c in hot:
        if c.hot == "messages":
            assert levels[c.external_userid] == "H", c
    lead_of = {lead.external_userid: lead for lead in leads}
    for c in hot:
        lead = lead_of[c.external_userid]
        assert lead.trigger == ("test_drive_booking" if c.hot == "booking" else "level_H"), c
        assert lead.route_rule == RULE_OF[c.route], (c, lead.route_rule)

    # routing: the expected dealer; sticky customers went first to the advisor who added them
    events_of: dict[int, list[LeadEvent]] = defaultdict(list)
    for event in events:
        events_of[event.lead_id].append(event)
    assigned_to: dict[int, list[str]] = {
        lead_id: [str((e.detail or {}).get("advisor")) for e in evs if e.kind == "assigned"]
        for lead_id, evs in events_of.items()
    }
    for c in hot:
        lead = lead_of[c.external_userid]
        assert lead.id is not None
        if c.route == POOL:
            assert lead.status == "pool" and not assigned_to[lead.id], lead
            continue
        first = assigned_to[lead.id][0]
        assert _dealer_of(first) == c.dealer, (c, first)
        if c.route == "sticky":
            assert first == c.added_by, (c, first)
        assert lead.status in ("accepted", "contacted"), (c, lead.status)

    # cards: one new-lead card per assignment, to exactly the advisors the history names, in order; no card twice
    cards_by_lead: dict[int, list[str]] = defaultdict(list)
    for card in sorted(people.cards, key=lambda card: card.at):
        if card.is_new_lead and card.lead_id is not None:
            cards_by_lead[card.lead_id].append(card.userid)
    for lead in leads:
        assert lead.id is not None
        assert cards_by_lead.get(lead.id, []) == assigned_to[lead.id], lead.id
        assert len(set(assigned_to[lead.id])) == len(assigned_to[lead.id])
    contents = Counter(
        (m.touser, str(m.body["textcard"]["title"]), str(m.body["textcard"]["url"])) for m in counters.app_messages
    )
    assert set(contents.values()) == {1}, [k for k, n in contents.items() if n > 1][:5]
    assert sum(counters.messages_dropped.values()) == 0, counters.messages_dropped
    assert sum(counters.messages_duplicate.values()) == 0

    # the ladder for every lead first given to a never-accepting advisor: remind, manager, reassign, then accepted
    laddered = [
        lead for lead in leads if lead.id is not None and assigned_to[lead.id][:1] and assigned_to[lead.id][0] in never
    ]
    assert len(laddered) >= DEALERS
    delivered = [
        (m.touser, str(m.body["textcard"]["url"]), str(m.body["textcard"]["title"])) for m in counters.app_messages
    ]

    def was_told(userid: str, url: str, title_start: str) -> bool:
        return any(u == userid and link == url and title.startswith(title_start) for u, link, title in delivered)

    for lead in laddered:
        assert lead.id is not None
        kinds = [e.kind for e in events_of[lead.id]]
        assert kinds.count("sla_remind") == kinds.count("sla_manager") == kinds.count("sla_reassign") == 1, kinds
        assert kinds.index("sla_remind") < kinds.index("sla_manager") < kinds.index("sla_reassign")
        first, url = assigned_to[lead.id][0], f"https://work.weixin.qq.com/leads/{lead.id}"
        assert was_told(first, url, "线索待接单提醒") and was_told(
            world.manager_id(_dealer_of(first)), url, "顾问超时未接单"
        )
        assert len(assigned_to[lead.id]) == 2 and lead.advisor_userid == assigned_to[lead.id][1]
        assert lead.reassign_count == 1 and lead.accepted_at is not None

    # the people's actions left their marks: accepted_at for every accept, contacted_at for every contact
    accepted = people.did("accept")
    assert len(accepted) == len([lead for lead in leads if lead.status != "pool"])
    for action in accepted:
        lead = next(lead for lead in leads if lead.id == action.lead_id)
        assert lead.advisor_userid == action.userid and lead.accepted_at is not None
    contacted = people.did("message") + people.did("contacted")
    assert people.did("message") and people.did("contacted")
    for action in contacted:
        lead = next(lead for lead in leads if lead.id == action.lead_id)
        assert lead.status == "contacted" and lead.contacted_at is not None, (action, lead.status)
    assert [a for a in people.actions if a.outcome not in ("changed",)] == []

    # reach: a customer who is not the advisor's contact got a transfer (or an invite); WeCom's 2-in-90-days held
    assert max(counters.transfers.values(), default=0) <= 2
    per_customer = Counter(t.external_userid for t in state.transfers)
    assert max(per_customer.values(), default=0) <= 2
    waiting_on_earlier = 0
    for lead in leads:
        if lead.status == "pool":
            continue
        if (lead.external_userid, lead.advisor_userid) in state.follows:
            assert lead.reach == "", lead
            continue
        assert lead.reach in ("transfer", "invite"), lead
        if lead.reach == "transfer":
            at_emulator = any(
                t.external_userid == lead.external_userid and t.takeover_userid == lead.advisor_userid
                for t in state.transfers
            )
            ours = [t for t in transfers if t.lead_id == lead.id and t.takeover_userid == lead.advisor_userid]
            assert at_emulator or [t.errcode for t in ours] == [40129], (lead, ours)
            waiting_on_earlier += not at_emulator

    # figures
    first_card: dict[str, float] = {}
    for card in people.cards:
        if card.is_new_lead and card.lead_id is not None:
            lead = next(lead for lead in leads if lead.id == card.lead_id)
            first_card.setdefault(lead.external_userid, card.at)
    to_card = [first_card[ext] - posted[ext] for ext in first_card]
    to_accept = [
        (lead.accepted_at - lead.assigned_at).total_seconds()
        for lead in leads
        if lead.accepted_at is not None and lead.assigned_at is not None and lead.reassign_count == 0
    ]
    rules = Counter(lead.route_rule for lead in leads)
    print(
        f"\nlead handoff e2e: synced at {synced_seconds:.1f} s; {len(hot)} hot of {CUSTOMERS} customers → "
        f"{len(leads)} leads "
        f"({', '.join(f'{k} {v}' for k, v in sorted(rules.items()))}); setup {setup_seconds:.1f} s, "
        f"ingest {ingest_seconds:.1f} s, done at {done_seconds:.1f} s, total {time.monotonic() - started:.1f} s, "
        f"ingest retries {retries}\n"
        f"hot message → advisor card: p50 {_percentile(to_card, 0.5):.2f} s, p95 {_percentile(to_card, 0.95):.2f} s "
        f"({len(to_card)} cards); assignment → accepted p50 {_percentile(to_accept, 0.5):.2f} s\n"
        f"ladder: {len(laddered)} leads reminded, escalated to managers and reassigned; "
        f"accepted {len(accepted)}, contacted by message {len(people.did('message'))}, by action "
        f"{len(people.did('contacted'))}\n"
        f"reach: {Counter(lead.reach or 'contact' for lead in leads if lead.status != 'pool')}; transfers at the "
        f"emulator {sum(counters.transfers.values())} (waiting on an earlier one: {waiting_on_earlier}); app messages "
        f"{sum(counters.messages_delivered.values())} delivered, {sum(counters.messages_dropped.values())} dropped"
    )
