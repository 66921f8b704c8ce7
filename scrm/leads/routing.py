"""Where a lead goes: the dealer, then the advisor.

Dealer, first match wins: the contact-way ``state`` the customer added through (FollowRelation.dealer_code);
the dealer of a customer group they are in; the city they stated (Contact.city, else found in their recent
messages among the dealers' cities); else none — the brand's pool (公海).

Advisor at that dealer: the one the customer already follows (sticky), if active; else the on-duty advisors
(their duty hours, else the dealer's opening hours) below their capacity, fewest open leads first, ties broken
round-robin by who was assigned least recently, then by userid. Choosing takes no lock: a lock per dealer would
deadlock two batches that hand off customers of the same two dealers in opposite orders. Two handoffs to one
dealer at the same instant may both see the same free slot, so capacity can be exceeded by the number of
simultaneous handoffs; the lead itself is unique per contact (partial unique index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.leads.calendar import OpeningHours, effective_hours
from scrm.models import (
    WORKING_STATUSES,
    Contact,
    CustomerGroup,
    Dealer,
    FollowRelation,
    GroupMember,
    Lead,
    Message,
    Staff,
    StaffRole,
)
from scrm.models.tenancy import ROSTER_UNMATCHED

CITY_SCAN_MESSAGES = 50  # how many of the customer's latest messages are searched for a dealer city
NEVER = datetime.min.replace(year=1970)


@dataclass(frozen=True)
class DealerChoice:
    dealer: Dealer | None
    rule: str  # state | group | city | pool


def dealer_hours(dealer: Dealer, tz: str) -> OpeningHours:
    return OpeningHours.parse(dealer.opening_hours, tz)


async def _dealer_by_code(session: AsyncSession, corp_id: str, code: str) -> Dealer | None:
    statement = select(Dealer).where(Dealer.corp_id == corp_id, Dealer.code == code)
    return (await session.exec(statement)).first()


async def _dealer_by_id(session: AsyncSession, dealer_id: int) -> Dealer | None:
    return await session.get(Dealer, dealer_id)


async def _state_dealer(session: AsyncSession, corp_id: str, external_userid: str) -> Dealer | None:
    statement = (
        select(FollowRelation.dealer_code)
        .where(
            FollowRelation.corp_id == corp_id,
            FollowRelation.external_userid == external_userid,
            FollowRelation.dealer_code != "",
            col(FollowRelation.deleted_at).is_(None),
        )
        .order_by(col(FollowRelation.added_at).desc().nulls_last())
    )
    for code in (await session.exec(statement)).all():
        dealer = await _dealer_by_code(session, corp_id, code)
        if dealer is not None:
            return dealer
    return None


async def _group_dealer(session: AsyncSession, corp_id: str, external_userid: str) -> Dealer | None:
    statement = (
        select(CustomerGroup.dealer_id)
        .join(
            GroupMember,
            (col(GroupMember.chat_id) == col(CustomerGroup.chat_id))
            & (col(GroupMember.corp_id) == CustomerGroup.corp_id),
        )
        .where(
            GroupMember.corp_id == corp_id,
            GroupMember.member_id == external_userid,
            col(GroupMember.left_at).is_(None),
            col(CustomerGroup.dealer_id).is_not(None),
            CustomerGroup.status == "active",
        )
        .order_by(col(GroupMember.join_time).desc().nulls_last())
        .limit(1)
    )
    dealer_id = (await session.exec(statement)).first()
    return await _dealer_by_id(session, dealer_id) if dealer_id is not None else None


async def stated_city(session: AsyncSession, corp_id: str, contact: Contact, cities: Sequence[str]) -> str:
    """The city the customer stated: Contact.city, else the latest of their messages that names a dealer city
    (longest name first, so 苏州工业园区 beats 苏州). Remembered on the contact when found."""
    if contact.city:
        return contact.city
    names = sorted({c for c in cities if c}, key=len, reverse=True)
    if not names:
        return ""
    statement = (
        select(Message.text)
        .where(
            Message.corp_id == corp_id,
            Message.external_userid == contact.external_userid,
            Message.sender_type == "customer",
        )
        .order_by(col(Message.sent_at).desc())
        .limit(CITY_SCAN_MESSAGES)
    )
    for text in (await session.exec(statement)).all():
        for name in names:
            if name in text or (name.endswith("市") and name[:-1] in text):
                contact.city = name
                return name
    return ""


async def _city_dealer(session: AsyncSession, corp_id: str, contact: Contact) -> Dealer | None:
    dealers = list((await session.exec(select(Dealer).where(Dealer.corp_id == corp_id))).all())
    city = await stated_city(session, corp_id, contact, [d.city for d in dealers])
    if not city:
        return None
    in_city = [d for d in dealers if d.city and (d.city == city or d.city.rstrip("市") == city.rstrip("市"))]
    if not in_city:
        return None
    if len(in_city) == 1:
        return in_city[0]
    # several dealers in the city: the one with the fewest open leads (spreads a city's leads)
    counts = dict(
        (
            await session.exec(
                select(Lead.dealer_id, func.count())
                .where(Lead.corp_id == corp_id, col(Lead.dealer_id).in_([d.id for d in in_city]))
                .where(col(Lead.status).in_(WORKING_STATUSES))
                .group_by(col(Lead.dealer_id))
            )
        ).all()
    )
    return min(in_city, key=lambda d: (counts.get(d.id, 0), d.code))


async def choose_dealer(session: AsyncSession, corp_id: str, contact: Contact) -> DealerChoice:
    dealer = await _state_dealer(session, corp_id, contact.external_userid)
    if dealer is not None:
        return DealerChoice(dealer, "state")
    dealer = await _group_dealer(session, corp_id, contact.external_userid)
    if dealer is not None:
        return DealerChoice(dealer, "group")
    dealer = await _city_dealer(session, corp_id, contact)
    if dealer is not None:
        return DealerChoice(dealer, "city")
    return DealerChoice(None, "pool")


async def sticky_advisor(session: AsyncSession, corp_id: str, dealer: Dealer, external_userid: str) -> Staff | None:
    """An active advisor of ``dealer`` the customer already follows (the most recent relation)."""
    statement = (
        select(Staff)
        .join(
            FollowRelation,
            (col(FollowRelation.userid) == col(Staff.userid)) & (col(FollowRelation.corp_id) == col(Staff.corp_id)),
        )
        .where(
            Staff.corp_id == corp_id,
            Staff.dealer_id == dealer.id,
            Staff.role == StaffRole.ADVISOR.value,
            col(Staff.active).is_(True),
            FollowRelation.external_userid == external_userid,
            col(FollowRelation.deleted_at).is_(None),
        )
        .order_by(col(FollowRelation.added_at).desc().nulls_last())
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def open_lead_counts(session: AsyncSession, corp_id: str, userids: Sequence[str]) -> dict[str, int]:
    statement = (
        select(Lead.advisor_userid, func.count())
        .where(Lead.corp_id == corp_id, col(Lead.advisor_userid).in_(list(userids)))
        .where(col(Lead.status).in_(WORKING_STATUSES))
        .group_by(col(Lead.advisor_userid))
    )
    return {userid: int(count) for userid, count in (await session.exec(statement)).all()}


async def _last_assigned(session: AsyncSession, corp_id: str, userids: Sequence[str]) -> dict[str, datetime]:
    statement = (
        select(Lead.advisor_userid, func.max(Lead.assigned_at))
        .where(Lead.corp_id == corp_id, col(Lead.advisor_userid).in_(list(userids)))
        .group_by(col(Lead.advisor_userid))
    )
    return {userid: at for userid, at in (await session.exec(statement)).all() if at is not None}


async def dealer_advisors(session: AsyncSession, corp_id: str, dealer_id: int) -> list[Staff]:
    statement = select(Staff).where(
        Staff.corp_id == corp_id,
        Staff.dealer_id == dealer_id,
        Staff.role == StaffRole.ADVISOR.value,
        col(Staff.active).is_(True),
    )
    return list((await session.exec(statement)).all())


async def available_advisor(
    session: AsyncSession,
    corp_id: str,
    dealer: Dealer,
    *,
    now: datetime,
    tz: str,
    exclude: Sequence[str] = (),
    require_on_duty: bool = True,
) -> Staff | None:
    """The advisor the next lead of ``dealer`` goes to, or None (nobody on duty with capacity)."""
    assert dealer.id is not None
    candidates = [
        s
        for s in await dealer_advisors(session, corp_id, dealer.id)
        if s.userid not in set(exclude) and not (s.extra or {}).get(ROSTER_UNMATCHED)  # WeCom does not know them
    ]
    if require_on_duty:
        candidates = [s for s in candidates if effective_hours(dealer.opening_hours, s.duty_hours, tz).is_open(now)]
    if not candidates:
        return None
    userids = [s.userid for s in candidates]
    counts = await open_lead_counts(session, corp_id, userids)
    candidates = [s for s in candidates if counts.get(s.userid, 0) < s.capacity]
    if not candidates:
        return None
    last = await _last_assigned(session, corp_id, userids)
    never = NEVER.replace(tzinfo=now.tzinfo)
    return min(candidates, key=lambda s: (counts.get(s.userid, 0), last.get(s.userid, never), s.userid))


async def dealer_managers(session: AsyncSession, corp_id: str, dealer_id: int | None) -> list[str]:
    if dealer_id is None:
        return []
    statement = select(Staff.userid).where(
        Staff.corp_id == corp_id,
        Staff.dealer_id == dealer_id,
        Staff.role == StaffRole.MANAGER.value,
        col(Staff.active).is_(True),
    )
    return sorted((await session.exec(statement)).all())


async def follows(session: AsyncSession, corp_id: str, external_userid: str, userid: str) -> bool:
    """Whether ``userid`` has the customer as a contact now."""
    statement = select(FollowRelation.id).where(
        FollowRelation.corp_id == corp_id,
        FollowRelation.external_userid == external_userid,
        FollowRelation.userid == userid,
        col(FollowRelation.deleted_at).is_(None),
    )
    return (await session.exec(statement)).first() is not None


async def handover_account(session: AsyncSession, corp_id: str, external_userid: str, takeover: str) -> str:
    """Who a transfer to ``takeover`` comes from: the staff member the customer follows now, brand accounts
    (no dealer) first, most recently added first. "" when the customer follows nobody else."""
    statement = (
        select(FollowRelation.userid, Staff.dealer_id)
        .join(
            Staff,
            (col(Staff.userid) == col(FollowRelation.userid)) & (col(Staff.corp_id) == col(FollowRelation.corp_id)),
            isouter=True,
        )
        .where(
            FollowRelation.corp_id == corp_id,
            FollowRelation.external_userid == external_userid,
            FollowRelation.userid != takeover,
            col(FollowRelation.deleted_at).is_(None),
        )
        .order_by(col(FollowRelation.added_at).desc().nulls_last())
    )
    rows = list((await session.exec(statement)).all())
    rows.sort(key=lambda row: row[1] is not None)  # stable: brand accounts first, recency kept
    return rows[0][0] if rows else ""
