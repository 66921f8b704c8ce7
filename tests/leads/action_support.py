"""A small dealer network for lead action, metrics and API tests: two dealers, their advisors and managers, an
operator, customers, and leads placed with an advisor as routing would leave them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from scrm.db import SessionFactory, write_transaction
from scrm.leads.history import set_status
from scrm.leads.rules import HandoffRules, SlaRules
from scrm.leads.services import LeadServices
from scrm.leads.sla import start_phase
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import (
    CLOSED_STATUSES,
    Contact,
    Dealer,
    FollowRelation,
    Lead,
    LeadEvent,
    LeadStatus,
    SlaPhase,
    Staff,
    StaffNotification,
)
from scrm.rows import ensure_corp
from tests.conftest import TEST_AES_KEY, TEST_SECRET_KEY, TEST_TOKEN

CORP = "wwleadcorp"
# Monday 2026-03-02 10:00 China time (both dealers are open every day, all day)
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
RULES = HandoffRules(sla=SlaRules(accept_minutes=5, contact_minutes=30, business_hours=False))


def lead_services(hooks: LifecycleHooks = NO_HOOKS) -> LeadServices:
    return LeadServices.with_rules(RULES, "https://scrm.example.com/", hooks)


@dataclass(frozen=True)
class Network:
    bj: int  # dealer ids
    sh: int


async def seed_network(factory: SessionFactory) -> Network:
    """Dealers BJ001 (advisors a1, a2; manager m1) and SH001 (advisor s1; manager m2), operator op, inactive
    advisor gone at BJ001."""
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        bj = Dealer(corp_id=CORP, code="BJ001", name="北京一店", city="北京")
        sh = Dealer(corp_id=CORP, code="SH001", name="上海一店", city="上海")
        session.add_all([bj, sh])
        await session.flush()
        assert bj.id is not None and sh.id is not None
        for userid, dealer_id, role, active in (
            ("a1", bj.id, "advisor", True),
            ("a2", bj.id, "advisor", True),
            ("m1", bj.id, "manager", True),
            ("s1", sh.id, "advisor", True),
            ("m2", sh.id, "manager", True),
            ("op", None, "operator", True),
            ("gone", bj.id, "advisor", False),
        ):
            session.add(Staff(corp_id=CORP, userid=userid, name=userid, dealer_id=dealer_id, role=role, active=active))
        return Network(bj=bj.id, sh=sh.id)


async def add_lead(
    factory: SessionFactory,
    external_userid: str,
    *,
    dealer_id: int | None,
    advisor: str = "a1",
    at: datetime = T0,
    channel: str = "ad",
    status: str = LeadStatus.ASSIGNED.value,
) -> int:
    """A customer followed by ``advisor`` and a2, with a lead of ``advisor`` put in ``status`` at ``at`` (assigned:
    the accept SLA runs; pool and waiting: no advisor; lost_pending: requested from contacted)."""
    async with write_transaction(factory) as session:
        session.add(
            Contact(corp_id=CORP, external_userid=external_userid, name=f"客户{external_userid}", stage="intent")
        )
        for userid in dict.fromkeys([advisor, "a2"]):
            if userid:
                session.add(FollowRelation(corp_id=CORP, external_userid=external_userid, userid=userid))
        lead = Lead(
            corp_id=CORP,
            external_userid=external_userid,
            dealer_id=dealer_id,
            channel=channel,
            score=88,
            level="H",
            created_at=at,
            updated_at=at,
        )
        session.add(lead)
        await session.flush()
        if status not in (LeadStatus.POOL.value, LeadStatus.WAITING.value):
            lead.advisor_userid, lead.assigned_at, lead.assignment_no = advisor, at, 1
            lead.tried_advisors = [advisor]
        if status == LeadStatus.ASSIGNED.value:
            start_phase(lead, SlaPhase.ACCEPT, now=at, sla=RULES.sla, hours=None)
        if status in CLOSED_STATUSES:
            lead.closed_at = at
        if status == LeadStatus.LOST_PENDING.value:
            lead.status_before_lost, lead.lost_reason = LeadStatus.CONTACTED.value, "budget"
        set_status(session, lead, status, "assigned" if lead.advisor_userid else "pooled", now=at)
        assert lead.id is not None
        return lead.id


async def get_lead(factory: SessionFactory, lead_id: int) -> Lead:
    async with factory() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        return lead


async def events(factory: SessionFactory, lead_id: int) -> list[LeadEvent]:
    async with factory() as session:
        statement = select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(LeadEvent.id)  # type: ignore[arg-type]
        return list((await session.exec(statement)).all())


async def notifications(factory: SessionFactory, lead_id: int) -> list[StaffNotification]:
    async with factory() as session:
        statement = (
            select(StaffNotification).where(StaffNotification.lead_id == lead_id).order_by(StaffNotification.id)  # type: ignore[arg-type]
        )
        return list((await session.exec(statement)).all())


async def contact_stage(factory: SessionFactory, external_userid: str) -> str:
    async with factory() as session:
        statement = select(Contact.stage).where(Contact.corp_id == CORP, Contact.external_userid == external_userid)
        return (await session.exec(statement)).one()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings for ``lianyi`` commands run in a test: this corp and the test database."""
    for name, value in {
        "CORP_ID": CORP,
        "CALLBACK_TOKEN": TEST_TOKEN,
        "CALLBACK_AES_KEY": TEST_AES_KEY,
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "LOG_JSON": "false",
    }.items():
        monkeypatch.setenv("LIANYI_" + name, value)
