"""A dealer network for routing, SLA and notification tests: dealers with opening hours, advisors with duty hours
and capacities, customers with their channel, groups and messages; times in China time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.leads import handoff
from scrm.leads.rules import HandoffRules
from scrm.leads.services import LeadServices
from scrm.models import (
    Contact,
    CustomerGroup,
    Dealer,
    FollowRelation,
    GroupMember,
    Lead,
    LeadEvent,
    Message,
    OutboxCommand,
    Staff,
    StaffNotification,
)
from scrm.rows import ensure_corp
from tests.domain_support import process_services

CORP = "wwroutecorp"
CN = ZoneInfo("Asia/Shanghai")


def cn(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A time in November 2026, China time (2026-11-23 is a Monday), as UTC."""
    return datetime(2026, 11, day, hour, minute, second, tzinfo=CN).astimezone(UTC)


def services(rules: HandoffRules | None = None) -> LeadServices:
    return LeadServices.with_rules(rules or HandoffRules(), "https://scrm.example.com/")


async def add_dealer(factory: SessionFactory, code: str, *, city: str = "", hours: str = "mon-sun 09:00-18:00") -> int:
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        dealer = Dealer(corp_id=CORP, code=code, name=f"{city}{code}店", city=city, opening_hours=hours)
        session.add(dealer)
        await session.flush()
        assert dealer.id is not None
        return dealer.id


async def add_staff(
    factory: SessionFactory,
    userid: str,
    dealer_id: int | None,
    *,
    role: str = "advisor",
    capacity: int = 20,
    duty: str = "",
    active: bool = True,
) -> None:
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        session.add(
            Staff(
                corp_id=CORP,
                userid=userid,
                name=userid,
                dealer_id=dealer_id,
                role=role,
                capacity=capacity,
                duty_hours=duty,
                active=active,
            )
        )


async def add_contact(
    factory: SessionFactory,
    ext: str,
    *,
    follows: tuple[str, ...] = ("brand",),
    dealer_code: str = "",
    says: str = "",
    at: datetime | None = None,
) -> None:
    at = at or cn(23, 9)
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        session.add(Contact(corp_id=CORP, external_userid=ext, name=f"客户{ext}", score=85, intent_level="H"))
        for n, userid in enumerate(follows):
            session.add(
                FollowRelation(
                    corp_id=CORP,
                    external_userid=ext,
                    userid=userid,
                    dealer_code=dealer_code if n == 0 else "",
                    channel="ad" if n == 0 else "",
                    added_at=at - timedelta(days=1, minutes=n),
                )
            )
        if says:
            session.add(
                Message(corp_id=CORP, source="kf", msgid=f"m-{ext}", external_userid=ext, text=says, sent_at=at)
            )


async def add_group(factory: SessionFactory, chat_id: str, dealer_id: int, members: tuple[str, ...]) -> None:
    async with write_transaction(factory) as session:
        session.add(CustomerGroup(corp_id=CORP, chat_id=chat_id, name="车友群", dealer_id=dealer_id))
        for ext in members:
            session.add(GroupMember(corp_id=CORP, chat_id=chat_id, member_id=ext, join_time=cn(20, 10)))


async def hand_off(
    factory: SessionFactory, ext: str, now: datetime, trigger: str = "level_H", *, leads: LeadServices | None
) -> Lead | None:
    """What the process's services do when the contact reaches level H (or a ``trigger`` behaviour is recorded):
    the new lead, or None. ``leads`` None: a process without the lead feature."""
    hooks = process_services(leads=leads)
    async with write_transaction(factory) as session:
        before = await handoff.open_lead(session, CORP, ext)
        if trigger.startswith("level_"):
            await hooks.intent_level_changed(session, CORP, ext, "", trigger.removeprefix("level_"), now)
        else:
            await hooks.behaviour_recorded(session, CORP, ext, trigger, now)
        after = await handoff.open_lead(session, CORP, ext)
        return after if after is not None and before is None else None


async def lead_of(factory: SessionFactory, ext: str) -> Lead:
    async with factory() as session:
        lead = (await session.exec(select(Lead).where(Lead.external_userid == ext))).one()
        return lead


async def events(factory: SessionFactory, lead_id: int) -> list[str]:
    async with factory() as session:
        rows = await session.exec(
            select(LeadEvent.kind).where(LeadEvent.lead_id == lead_id).order_by(col(LeadEvent.id))
        )
        return list(rows.all())


async def notifications(factory: SessionFactory, userid: str | None = None) -> list[StaffNotification]:
    async with factory() as session:
        statement = select(StaffNotification).order_by(col(StaffNotification.id))
        if userid is not None:
            statement = statement.where(StaffNotification.userid == userid)
        return list((await session.exec(statement)).all())


async def app_messages(factory: SessionFactory) -> list[OutboxCommand]:
    async with factory() as session:
        rows = await session.exec(
            select(OutboxCommand).where(OutboxCommand.kind == "send_app_message").order_by(col(OutboxCommand.id))
        )
        return list(rows.all())
