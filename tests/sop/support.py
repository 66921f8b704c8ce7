"""Building blocks for engine tests: a catalog from YAML strings, a seeded corp, an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from sqlmodel import select

from scrm.contact_policy import Policy
from scrm.db import SessionFactory, write_transaction
from scrm.leads.services import LeadServices
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import Dealer, OutboxCommand, SopEnrolment, SopStepRun, Staff
from scrm.rows import ensure_corp
from scrm.services import Services
from scrm.sop.catalog import Catalog, CatalogHolder
from scrm.sop.services import SopServices
from scrm.sop.spec import SopTemplate, TemplateBundle
from scrm.sop.ticks import run_due
from scrm.sync import contacts
from tests.domain_support import process_services

CORP = "wwsopcorp"
# Monday 2026-03-02 10:00 China time
MONDAY_10AM = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def bundle(text: str, files: dict[str, str] | None = None) -> TemplateBundle:
    raw = yaml.safe_load(text)
    return TemplateBundle(SopTemplate.model_validate(raw), raw, files or {}, f"{raw['id']}.yaml")


def catalog(*bundles: TemplateBundle, policy: Policy | None = None, generation: int = 1) -> Catalog:
    return Catalog(bundles={b.id: b for b in bundles}, policy=policy or Policy(), ok=True, generation=generation)


def services(*bundles: TemplateBundle, policy: Policy | None = None) -> SopServices:
    return SopServices(holder=CatalogHolder.fixed(catalog(*bundles, policy=policy)))


@contextmanager
def installed(svc: SopServices, *, leads: LeadServices | None = None) -> Iterator[Services]:
    """The services of a process running the SOP engine on ``svc`` (and lead handoff on ``leads``): what the test
    passes as ``hooks`` to the domain calls it makes inside the block."""
    yield process_services(sop=svc, leads=leads)


async def seed(factory: SessionFactory, *, staff: str = "zhangsan", dealer: str = "BJ001") -> None:
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        session.add(Dealer(corp_id=CORP, code=dealer, name="北京示例4S店", city="北京", address="朝阳区示例路1号"))
        await session.flush()
        found = (await session.exec(select(Dealer).where(Dealer.code == dealer))).one()
        session.add(Staff(corp_id=CORP, userid=staff, name="张三", dealer_id=found.id))


async def add_contact(
    factory: SessionFactory,
    external_userid: str,
    *,
    at: datetime,
    userid: str = "zhangsan",
    state: str = "L1~q~BJ001~zhangsan",
    welcome_code: str = "",
    name: str = "",
    hooks: LifecycleHooks = NO_HOOKS,
) -> None:
    async with write_transaction(factory) as session:
        await contacts.on_contact_added(
            session,
            CORP,
            userid=userid,
            external_userid=external_userid,
            state=state,
            welcome_code=welcome_code or f"code-{external_userid}-{int(at.timestamp())}",
            event_time=at,
            hooks=hooks,
        )
        if name:
            from scrm.models import Contact

            contact = (await session.exec(select(Contact).where(Contact.external_userid == external_userid))).one()
            contact.name = name


async def sop_commands(factory: SessionFactory, kind: str | None = None) -> list[OutboxCommand]:
    async with factory() as session:
        query = select(OutboxCommand).order_by(OutboxCommand.id)  # type: ignore[arg-type]
        found = list((await session.exec(query)).all())
    return [c for c in found if (kind is None or c.kind == kind)]


async def enrolments(factory: SessionFactory) -> list[SopEnrolment]:
    async with factory() as session:
        return list((await session.exec(select(SopEnrolment).order_by(SopEnrolment.id))).all())  # type: ignore[arg-type]


async def step_runs(factory: SessionFactory) -> list[SopStepRun]:
    async with factory() as session:
        return list((await session.exec(select(SopStepRun).order_by(SopStepRun.id))).all())  # type: ignore[arg-type]


async def run_until(
    factory: SessionFactory,
    svc: SopServices,
    start: datetime,
    end: datetime,
    *,
    step: timedelta = timedelta(minutes=10),
) -> None:
    """Tick the engine every ``step`` of virtual time from ``start`` to ``end`` (no real sleeping)."""
    now = start
    while now <= end:
        await run_due(factory, svc, now)
        now += step


def local(text: str) -> datetime:
    """'2026-03-03 10:00' China time → aware UTC datetime."""
    naive = datetime.fromisoformat(text)
    return (naive - timedelta(hours=8)).replace(tzinfo=UTC)


def payload_text(command: OutboxCommand) -> str:
    payload: dict[str, Any] = command.payload
    return str((payload.get("text") or {}).get("content", "") or payload.get("textcard", {}).get("description", ""))
