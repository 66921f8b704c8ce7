"""The second half of `lianyi demo`: leads handed to dealers' advisors with an SLA rung, and a group campaign that
is saved, approved by a second person, sent and reported.

The roster (dealers open all day, their staff as advisors, the scenario's 销售经理 as managers, a brand operator)
is imported the way `lianyi roster import` does, by the demo's operator account (``demo_ops``); the campaign is
approved by a manager's account (``demo_manager``, linked to the first 销售经理). Both accounts are seeded
without a password: they act for the demo, nobody signs in with them. A few customers write buying questions
to ``/ingest/messages`` (as a chat-archive puller would); the shipped intent rules score them H and the
shipped handoff rules route each to the advisor who added them. The emulator's advisors
(:mod:`bot.emulator.advisors`) accept through the staff lead API, except one who never does: the demo's clock
then jumps past the accept SLA and the ladder's first rung (a reminder) fires. The campaign is saved by the
operator, approved by a dealer manager, planned by the scheduler's campaign tick (after the clock jumps over
quiet hours when it is night in China), created in WeCom by the outbox dispatcher and confirmed by the
emulated group owners; its report is the one `lianyi campaign report` prints.

Time is :class:`JumpingClock`: the wall clock plus an offset, shared by the emulator and the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import yaml
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.emulator.advisors import NEVER_ACCEPTS, AdvisorProfile, EmulatedPeople, LianyiEndpoints
from bot.emulator.clock import VirtualClock
from bot.emulator.localstack import LocalStack
from bot.runtime.campaign_wiring import campaign_policy
from bot.web.auth import issue_staff_token
from scrm.campaigns import service
from scrm.campaigns.report import campaign_report, render_report
from scrm.campaigns.spec import CampaignSpec
from scrm.db import write_transaction
from scrm.leads.history import EVENT_NAMES
from scrm.leads.roster import import_roster
from scrm.leads.roster_yaml import read_yaml_roster
from scrm.leads.rules import rules_in
from scrm.leads.transitions import status_name
from scrm.models import CampaignBatch, CampaignRun, Dealer, FollowRelation, Lead, LeadEvent, Staff
from scrm.models.accounts import User, UserRole

OPERATOR = "demo_ops"
MANAGER = "demo_manager"
SLA_EVENTS = ("sla_remind", "sla_manager", "sla_reassign", "sla_pool")
CAMPAIGN_CODE = "demo_test_drive"
HOT_CUSTOMERS = 6
BUYING_QUESTIONS = (
    "最近打算买车，想了解一下",
    "我想买L7，准备这周下订",
    "这周末能去店里试驾吗",
    "现在下订什么时候能提车",
    "贷款的话首付多少，月供多少",
)
CAMPAIGN = {
    "code": CAMPAIGN_CODE,
    "name": "周末试驾日",
    "chat_type": "group",
    "content": {"text": "{{ group.name }}的朋友们：{{ dealer.name }}本周六试驾日，欢迎到店！"},
    "schedule": {"now": True},
    "approval": True,
}


class JumpingClock(VirtualClock):
    """Wall time plus an offset that only grows: everything runs in real time until the demo jumps ahead."""

    def __init__(self) -> None:
        super().__init__(start=time.time())
        self._offset = 0.0

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._offset += seconds


@dataclass
class JourneyReport:
    leads: list[tuple[int, str, str, str, str]] = field(default_factory=list)  # id, customer, dealer, advisor, status
    accepted: int = 0
    never_accepts: str = ""
    sla_rungs: list[tuple[int, str, str]] = field(default_factory=list)  # lead id, event kind, advisor
    sla_minutes: int = 0
    campaign_author: str = OPERATOR
    campaign_approver: str = ""
    clock_jumped_minutes: int = 0
    campaign_report: str = ""


def roster_yaml(stack: LocalStack) -> str:
    """Every scenario dealer (open all day) and its staff: 销售经理 are managers, the others advisors."""
    dealers, staff = [], []
    for dealer in stack.scenario.dealers:
        dealers.append(
            {"code": dealer.code, "name": dealer.name, "city": dealer.city, "opening_hours": "daily 00:00-24:00"}
        )
        for member in dealer.staff:
            manager = "经理" in (member.position or "")
            entry = {"userid": member.userid, "dealer": dealer.code, "role": "manager" if manager else "advisor"}
            staff.append(entry if manager else {**entry, "capacity": 30})
    staff.append({"userid": OPERATOR, "role": "operator"})
    return yaml.safe_dump({"dealers": dealers, "staff": staff}, allow_unicode=True, sort_keys=False)


async def _until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {within:.0f} s")
        await asyncio.sleep(0.2)


async def import_demo_roster(stack: LocalStack) -> None:
    roster, problems = read_yaml_roster(roster_yaml(stack), "demo-roster.yaml")
    if problems:
        raise RuntimeError("; ".join(str(p) for p in problems))
    stack.state.add_staff(OPERATOR, "品牌运营", "", position="品牌运营")
    async with write_transaction(stack.session_factory) as session:
        session.add(User(username=OPERATOR, display_name="品牌运营", role=UserRole.OPERATOR.value))
        await session.flush()
        await import_roster(session, stack.state.corp_id, roster, actor=OPERATOR)
        await _add_manager_account(session)


async def _hot_customers(stack: LocalStack, advisors: set[str]) -> list[FollowRelation]:
    """One customer per advisor (at most HOT_CUSTOMERS), each added through a dealer's QR code."""
    async with stack.session_factory() as session:
        statement = (
            select(FollowRelation)
            .where(col(FollowRelation.deleted_at).is_(None), col(FollowRelation.userid).in_(advisors))
            .where(FollowRelation.dealer_code != "")
            .order_by(col(FollowRelation.userid), col(FollowRelation.external_userid))
        )
        chosen: dict[str, FollowRelation] = {}
        for relation in (await session.exec(statement)).all():
            chosen.setdefault(relation.userid, relation)
    return list(chosen.values())[:HOT_CUSTOMERS]


async def _say_hot_things(stack: LocalStack, base: str, customers: list[FollowRelation]) -> None:
    now = stack.state.now()
    records = [
        {
            "msgid": f"demo-{c.external_userid}-{n}",
            "source": "archive",
            "sent_at": now + n * 0.001,
            "chat_type": "single",
            "external_userid": c.external_userid,
            "userid": c.userid,
            "sender_type": "customer",
            "text": text,
        }
        for c in customers
        for n, text in enumerate(BUYING_QUESTIONS)
    ]
    headers = {"Authorization": f"Bearer {stack.settings.ingest_token}"}
    async with stack.http.post(f"{base}/ingest/messages", json=records, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"demo: /ingest/messages answered {response.status}: {await response.text()}")


async def _lead_rows(stack: LocalStack) -> list[Lead]:
    async with stack.session_factory() as session:
        return list((await session.exec(select(Lead).order_by(col(Lead.id)))).all())


async def _reminders(stack: LocalStack) -> list[LeadEvent]:
    async with stack.session_factory() as session:
        return list((await session.exec(select(LeadEvent).where(LeadEvent.kind == "sla_remind"))).all())


async def run_leads(stack: LocalStack, clock: JumpingClock, base: str, report: JourneyReport) -> None:
    """Hot customers → leads with their advisors; all but one advisor accept; the SLA reminds the one who did not."""
    advisors = {m.userid for d in stack.scenario.dealers for m in d.staff if "经理" not in (m.position or "")}
    customers = await _hot_customers(stack, advisors)
    report.never_accepts = customers[0].userid
    profiles = {u: AdvisorProfile(accept_after=1.0, reply_after=1.0) for u in advisors}
    profiles[report.never_accepts] = NEVER_ACCEPTS
    tokens: dict[str, str] = {}
    async with write_transaction(stack.session_factory) as session:
        for userid in sorted({m.userid for d in stack.scenario.dealers for m in d.staff}):
            issued = await issue_staff_token(
                stack.settings, session, userid, lifetime=timedelta(days=30), created_by="demo", now=clock.utcnow()
            )
            tokens[userid] = issued.token
    endpoints = LianyiEndpoints([base], tokens.__getitem__, stack.settings.ingest_token)
    people = EmulatedPeople(stack.state, endpoints, stack.http, profiles)
    stop = asyncio.Event()
    running = asyncio.create_task(people.run(stop))
    try:
        await _say_hot_things(stack, base, customers)

        async def all_taken() -> bool:
            leads = await _lead_rows(stack)
            return len(leads) >= len(customers) and len(people.did("accept")) >= len(customers) - 1

        await _until(all_taken, 60, "leads accepted")
        report.sla_minutes = rules_in(stack.settings.sop_dir).sla_for("").accept_minutes
        clock.advance((report.sla_minutes + 1) * 60)
        report.clock_jumped_minutes += report.sla_minutes + 1

        async def reminded() -> bool:
            return bool(await _reminders(stack))

        await _until(reminded, 60, "the SLA reminder")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    report.accepted = len(people.did("accept"))


async def summarise_leads(stack: LocalStack, report: JourneyReport) -> None:
    """Every lead as it stands now, and every SLA rung that fired (the night the clock skipped fires more)."""
    async with stack.session_factory() as session:
        codes = {d.id: d.code for d in (await session.exec(select(Dealer))).all()}
        statement = select(LeadEvent).where(col(LeadEvent.kind).in_(SLA_EVENTS)).order_by(col(LeadEvent.id))
        events = list((await session.exec(statement)).all())
    report.leads = [
        (lead.id or 0, lead.external_userid, codes.get(lead.dealer_id, "-"), lead.advisor_userid, lead.status)
        for lead in await _lead_rows(stack)
    ]
    report.sla_rungs = [(e.lead_id, e.kind, str((e.detail or {}).get("advisor", ""))) for e in events]


async def _add_manager_account(session: AsyncSession) -> None:
    """The account of the roster's first dealer manager (``MANAGER``), who approves the campaign."""
    statement = select(Staff).where(Staff.role == "manager").order_by(col(Staff.userid))
    found = (await session.exec(statement)).first()
    if found is None or found.dealer_id is None:
        raise RuntimeError("demo: the roster has no manager to approve the campaign")
    dealer = await session.get(Dealer, found.dealer_id)
    assert dealer is not None
    session.add(
        User(
            username=MANAGER,
            display_name=found.name or found.userid,
            role=UserRole.MANAGER.value,
            dealer_code=dealer.code,
            staff_userid=found.userid,
        )
    )


async def run_campaign(stack: LocalStack, clock: JumpingClock, report: JourneyReport) -> None:
    """Save (operator), approve (a manager), let the scheduler plan and the dispatcher send it, then report."""
    corp = stack.state.corp_id
    spec = CampaignSpec.model_validate(CAMPAIGN)
    report.campaign_approver = MANAGER
    async with write_transaction(stack.session_factory) as session:
        await service.save_campaign(session, corp, spec, by=OPERATOR, now=clock.utcnow())
    policy = campaign_policy(stack.settings)
    if policy.in_quiet_hours(clock.utcnow()):  # night in China: group pushes wait for the end of quiet hours
        wait = (policy.next_allowed(clock.utcnow()) - clock.utcnow()).total_seconds() + 60
        clock.advance(wait)
        report.clock_jumped_minutes += round(wait / 60)
        await asyncio.sleep(stack.settings.sop_tick_seconds)  # the SOP steps the night held back go out first
        await stack.wait_until_settled(within=120)
    async with write_transaction(stack.session_factory) as session:
        await service.approve(session, corp, CAMPAIGN_CODE, by=report.campaign_approver, now=clock.utcnow())

    async def sent() -> bool:
        async with stack.session_factory() as session:
            run = (await session.exec(select(CampaignRun))).first()
            if run is None:
                return False
            queued = select(CampaignBatch).where(CampaignBatch.run_id == run.id, CampaignBatch.status == "queued")
            return (await session.exec(queued)).first() is None

    await _until(sent, 90, "the campaign's group-send tasks")
    clock.advance(stack.settings.campaign_poll_seconds + 60)  # the tracking tick's first look at the tasks
    report.clock_jumped_minutes += round((stack.settings.campaign_poll_seconds + 60) / 60)

    async def tracked() -> bool:
        async with stack.session_factory() as session:
            unconfirmed = select(CampaignBatch).where(col(CampaignBatch.confirmed_at).is_(None))
            return (await session.exec(unconfirmed)).first() is None

    await _until(tracked, 90, "the campaign's tracking")
    async with stack.session_factory() as session:
        report.campaign_report = render_report(await campaign_report(session, corp, CAMPAIGN_CODE))


def format_journeys(report: JourneyReport) -> list[str]:
    lines = [f"线索：{len(report.leads)} 条（客户问了购车、试驾、提车和贷款，意向 H 级，按来源活码分给门店顾问）"]
    for lead_id, customer, dealer, advisor, status in report.leads:
        lines.append(f"  线索 {lead_id}  客户 {customer}  门店 {dealer}  顾问 {advisor}  状态 {status_name(status)}")
    lines.append(
        f"顾问接单：{report.accepted} 条；{report.never_accepts} 一直未接单（接单时限 {report.sla_minutes} 分钟）"
    )
    for lead_id, kind, advisor in report.sla_rungs:
        lines.append(f"  SLA：线索 {lead_id} {EVENT_NAMES.get(kind, kind)}（当时的顾问 {advisor}）")
    lines.append(
        f"群发活动 {CAMPAIGN_CODE}：{report.campaign_author}（运营）创建，{report.campaign_approver}（门店经理）审批，"
        "已发送；报表："
    )
    lines.extend("  " + line for line in report.campaign_report.splitlines() if line.strip())
    lines.append(f"演示时钟共向前跳了 {report.clock_jumped_minutes} 分钟：触发 SLA、跳过夜间免打扰时段、查看群发结果")
    if report.leads:
        customer = report.leads[-1][1]
        lines.append(
            f"试试：lianyi leads show {report.leads[0][0]}；lianyi campaign report {CAMPAIGN_CODE}；"
            f"lianyi sop render new_customer_nurture --contact {customer}"
        )
    return lines
