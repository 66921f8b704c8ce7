"""When a contact becomes a lead: reaching a handoff level (H by default) or a handoff behaviour (预约试驾, 留资),
as ``handoff.yaml`` says. Called from the intent pipeline and the lifecycle in the transaction that changed
the contact, so the lead, its routing, its SLA and the advisor's card commit together with the cause.

One open lead per contact (partial unique index): a contact who is already a lead is left with it; two
workers racing on the same contact create one lead (the loser's savepoint rolls back and it reads the winner's).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.leads.assignment import contact_of, place, to_pool
from scrm.leads.history import record_event
from scrm.leads.routing import choose_dealer
from scrm.leads.services import LeadServices
from scrm.models import Contact, FollowRelation, Lead, LeadScoreChange, LeadStatus, Message

log = logging.getLogger(__name__)

ASKED_MESSAGES = 3
ASKED_WINDOW = timedelta(days=7)
ASKED_MAX_CHARS = 200
TOP_REASONS = 3


async def open_lead(session: AsyncSession, corp_id: str, external_userid: str) -> Lead | None:
    statement = select(Lead).where(
        Lead.corp_id == corp_id, Lead.external_userid == external_userid, col(Lead.closed_at).is_(None)
    )
    return (await session.exec(statement)).first()


def qualifies(services: LeadServices, trigger: str) -> bool:
    rules = services.rules()
    if not rules.enabled:
        return False
    if trigger.startswith("level_"):
        return trigger.removeprefix("level_") in rules.handoff.levels
    return trigger in rules.handoff.behaviours


async def _top_reasons(session: AsyncSession, corp_id: str, external_userid: str) -> list[dict[str, object]]:
    statement = (
        select(LeadScoreChange.reasons)
        .where(LeadScoreChange.corp_id == corp_id, LeadScoreChange.external_userid == external_userid)
        .order_by(col(LeadScoreChange.at).desc(), col(LeadScoreChange.id).desc())
        .limit(1)
    )
    reasons = (await session.exec(statement)).first() or []
    ranked = sorted(reasons, key=lambda r: -abs(float(r.get("points", 0) or 0)))
    return ranked[:TOP_REASONS]


async def _asked(session: AsyncSession, corp_id: str, external_userid: str, now: datetime) -> str:
    statement = (
        select(Message.text)
        .where(
            Message.corp_id == corp_id,
            Message.external_userid == external_userid,
            Message.sender_type == "customer",
            Message.msgtype == "text",
            col(Message.sent_at) >= now - ASKED_WINDOW,
        )
        .order_by(col(Message.sent_at).desc())
        .limit(ASKED_MESSAGES)
    )
    texts = [t.strip() for t in (await session.exec(statement)).all() if t.strip()]
    joined = " / ".join(reversed(texts))
    return joined if len(joined) <= ASKED_MAX_CHARS else joined[: ASKED_MAX_CHARS - 1] + "…"


async def _channel(session: AsyncSession, corp_id: str, external_userid: str) -> str:
    statement = (
        select(FollowRelation.channel)
        .where(FollowRelation.corp_id == corp_id, FollowRelation.external_userid == external_userid)
        .where(FollowRelation.channel != "")
        .order_by(col(FollowRelation.added_at).desc().nulls_last())
        .limit(1)
    )
    return (await session.exec(statement)).first() or ""


async def _create(session: AsyncSession, contact: Contact, trigger: str, now: datetime) -> Lead | None:
    lead = Lead(
        corp_id=contact.corp_id,
        external_userid=contact.external_userid,
        status=LeadStatus.POOL.value,
        trigger=trigger,
        score=contact.score,
        level=contact.intent_level or "",
        channel=await _channel(session, contact.corp_id, contact.external_userid),
        reasons=await _top_reasons(session, contact.corp_id, contact.external_userid),
        asked=await _asked(session, contact.corp_id, contact.external_userid, now),
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(lead)
            await session.flush()
    except IntegrityError:  # another worker made this contact's lead a moment ago
        return None
    return lead


async def consider(
    session: AsyncSession, services: LeadServices, corp_id: str, external_userid: str, *, trigger: str, now: datetime
) -> Lead | None:
    """Hand the contact off if ``trigger`` (``level_H``, ``test_drive_booking``, ``form``…) qualifies and they are
    not a lead already. Returns the new lead, or None."""
    if not qualifies(services, trigger):
        return None
    if await open_lead(session, corp_id, external_userid) is not None:
        return None
    contact = await contact_of(session, corp_id, external_userid)
    if contact is None:
        return None
    lead = await _create(session, contact, trigger, now)
    if lead is None:
        return None
    record_event(session, lead, "created", now=now, detail={"trigger": trigger, "score": lead.score})
    choice = await choose_dealer(session, corp_id, contact)
    lead.route_rule = choice.rule
    if choice.dealer is None:
        await to_pool(session, services, lead, now=now, reason="未匹配到门店（无渠道门店、所在群门店或所在城市）")
    else:
        await place(session, services, lead, choice.dealer, now=now)
    log.info("lead handed off", extra={"lead": lead.id, "status": lead.status, "rule": lead.route_rule})
    return lead
