"""Giving a lead to an advisor, taking it back, and the pool (公海).

:func:`place` decides for a lead whose dealer is known: wait for opening time (``routing.outside_hours:
wait``), the advisor the customer already follows, else the next available advisor, else the pool.
:func:`assign` starts the accept SLA, arranges how the advisor reaches the customer (already their contact;
a transfer from the brand account, within WeCom's two-per-90-days rule; or an invite task) and queues the
advisor's card. Every notification key names the lead and its assignment number, so a repeated tick or a
replayed event cannot notify anyone twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.errors import DomainError
from scrm.leads import cards
from scrm.leads.history import record_event, set_status
from scrm.leads.notify import notify_about_lead
from scrm.leads.routing import (
    available_advisor,
    dealer_hours,
    dealer_managers,
    follows,
    handover_account,
    sticky_advisor,
)
from scrm.leads.services import LeadServices
from scrm.leads.sla import clear_phase, start_phase
from scrm.leads.transfers import request_transfer
from scrm.models import Contact, Dealer, Lead, LeadStatus, SlaPhase, Staff

INVITE_HINT = "客户还不是您的好友：请通过门店群或名片邀请客户添加您。"
TRANSFER_HINT = "客户将由品牌账号转接给您（客户 24 小时内未拒绝即完成），转接前可在群内先联系。"


async def contact_of(session: AsyncSession, corp_id: str, external_userid: str) -> Contact | None:
    statement = select(Contact).where(Contact.corp_id == corp_id, Contact.external_userid == external_userid)
    return (await session.exec(statement)).first()


async def _reach(session: AsyncSession, services: LeadServices, lead: Lead, dealer: Dealer, now: datetime) -> str:
    """How the advisor gets the customer; returns the hint for their card."""
    if await follows(session, lead.corp_id, lead.external_userid, lead.advisor_userid):
        lead.reach = ""
        return ""
    routing = services.rules().routing_for(dealer.code)
    if routing.reach == "transfer":
        handover = await handover_account(session, lead.corp_id, lead.external_userid, lead.advisor_userid)
        if handover:
            transfer = await request_transfer(
                session,
                corp_id=lead.corp_id,
                lead_id=lead.id,
                external_userid=lead.external_userid,
                handover_userid=handover,
                takeover_userid=lead.advisor_userid,
                message=routing.transfer_message,
                now=now,
                lead_url=services.lead_url(lead.id),
            )
            if transfer is not None:
                lead.reach = "transfer"
                return TRANSFER_HINT
    lead.reach = "invite"
    return INVITE_HINT + (f"\n入群链接：{routing.invite_url}" if routing.invite_url else "")


async def assign(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    advisor: Staff,
    dealer: Dealer,
    *,
    now: datetime,
    actor: str = "system",
    rule: str = "",
) -> None:
    """Give ``lead`` to ``advisor`` of ``dealer`` now: accept SLA, reach, history, the advisor's card."""
    rules = services.rules()
    lead.dealer_id = dealer.id
    lead.advisor_userid = advisor.userid
    lead.assignment_no += 1
    lead.tried_advisors = [*(lead.tried_advisors or []), advisor.userid]
    lead.assigned_at = now
    lead.accepted_at = None
    start_phase(
        lead, SlaPhase.ACCEPT, now=now, sla=rules.sla_for(dealer.code), hours=dealer_hours(dealer, rules.timezone)
    )
    set_status(
        session,
        lead,
        LeadStatus.ASSIGNED.value,
        "assigned",
        now=now,
        actor=actor,
        detail={"advisor": advisor.userid, "dealer": dealer.code, "rule": rule, "assignment": lead.assignment_no},
    )
    hint = await _reach(session, services, lead, dealer, now)
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    await notify_about_lead(
        session,
        lead,
        [advisor.userid],
        key=f"lead:{lead.id}:assign:{lead.assignment_no}",
        kind="new_lead",
        card=cards.new_lead(lead, contact, tz=rules.timezone, reach_hint=hint),
        url=services.lead_url(lead.id),
        now=now,
    )


async def to_pool(
    session: AsyncSession, services: LeadServices, lead: Lead, *, now: datetime, reason: str, actor: str = "system"
) -> None:
    """Put the lead in the pool and tell the dealer's managers and the brand's pool operators."""
    rules = services.rules()
    clear_phase(lead)
    lead.advisor_userid = ""
    set_status(session, lead, LeadStatus.POOL.value, "pooled", now=now, actor=actor, detail={"reason": reason})
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    recipients = [*await dealer_managers(session, lead.corp_id, lead.dealer_id), *rules.routing.pool_notify]
    await notify_about_lead(
        session,
        lead,
        recipients,
        key=f"lead:{lead.id}:pool:{lead.assignment_no}",
        kind="pooled",
        card=cards.pooled(lead, contact, reason=reason),
        url=services.lead_url(lead.id),
        now=now,
    )


async def place(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    dealer: Dealer,
    *,
    now: datetime,
    actor: str = "system",
    exclude: Sequence[str] = (),
) -> None:
    """Wait, assign or pool a lead of ``dealer`` (see the module docstring)."""
    rules = services.rules()
    routing = rules.routing_for(dealer.code)
    assert dealer.id is not None
    lead.dealer_id = dealer.id
    hours = dealer_hours(dealer, rules.timezone)
    open_now = hours.is_open(now)
    if not open_now and routing.outside_hours == "wait":
        opening = hours.next_open(now)
        if opening is not None:
            clear_phase(lead)
            lead.next_check_at = opening
            if lead.status != LeadStatus.WAITING.value:
                set_status(
                    session,
                    lead,
                    LeadStatus.WAITING.value,
                    "waiting",
                    now=now,
                    actor=actor,
                    detail={"dealer": dealer.code, "until": opening.isoformat()},
                )
            return
    advisor = None
    if lead.external_userid and not exclude:
        advisor = await sticky_advisor(session, lead.corp_id, dealer, lead.external_userid)
        if advisor is not None:
            await assign(session, services, lead, advisor, dealer, now=now, actor=actor, rule="sticky")
            return
    advisor = await available_advisor(
        session, lead.corp_id, dealer, now=now, tz=rules.timezone, exclude=exclude, require_on_duty=open_now
    )
    if advisor is not None:
        await assign(session, services, lead, advisor, dealer, now=now, actor=actor, rule="available")
        return
    await to_pool(
        session, services, lead, now=now, reason=f"{dealer.name or dealer.code} 暂无可接单的顾问", actor=actor
    )


async def _tell_previous(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    previous: str,
    assignment: int,
    now: datetime,
    reason: str,
) -> None:
    if not previous or previous == lead.advisor_userid:
        return
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    await notify_about_lead(
        session,
        lead,
        [previous],
        key=f"lead:{lead.id}:away:{assignment}",
        kind="reassigned_away",
        card=cards.reassigned_away(lead, contact, reason=reason),
        url=services.lead_url(lead.id),
        now=now,
    )


async def reassign(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    *,
    now: datetime,
    actor: str,
    advisor_userid: str | None = None,
    reason: str,
) -> str:
    """Give the lead to ``advisor_userid`` (or the next available advisor of its dealer who has not had it);
    the previous advisor is told once. Returns the new status (assigned, waiting or pool)."""
    previous, assignment = lead.advisor_userid, lead.assignment_no
    if advisor_userid:
        statement = select(Staff).where(Staff.corp_id == lead.corp_id, Staff.userid == advisor_userid)
        advisor = (await session.exec(statement)).first()
        if advisor is None or not advisor.active:
            raise DomainError(f"成员 {advisor_userid} 不存在或已停用")
        dealer_id = advisor.dealer_id if advisor.dealer_id is not None else lead.dealer_id
        dealer = await session.get(Dealer, dealer_id) if dealer_id is not None else None
        if dealer is None:
            raise DomainError(f"成员 {advisor_userid} 未归属任何门店，不能接线索")
        await assign(session, services, lead, advisor, dealer, now=now, actor=actor, rule="manual")
    else:
        dealer = await session.get(Dealer, lead.dealer_id) if lead.dealer_id is not None else None
        if dealer is None:
            await to_pool(session, services, lead, now=now, reason=reason, actor=actor)
        else:
            await place(session, services, lead, dealer, now=now, actor=actor, exclude=list(lead.tried_advisors or []))
    record_event(
        session,
        lead,
        "reassigned",
        now=now,
        actor=actor,
        detail={"from": previous, "to": lead.advisor_userid, "reason": reason},
    )
    await _tell_previous(session, services, lead, previous, assignment, now, reason)
    return lead.status
