"""The SLA tick: leads whose ``next_check_at`` has come, claimed with FOR UPDATE SKIP LOCKED (an advisor's
action holds the same row lock, so a lead accepted in the last second is seen accepted, not escalated).

A waiting lead is placed at its dealer's opening time. A lead in an SLA phase gets the phase's next rung:
remind the advisor, tell the dealer's managers, reassign to the next advisor (at most ``max_reassign`` times,
then the pool), or the pool. Each rung is recorded (``sla_remind``, ``sla_manager``, ``sla_reassign``,
``sla_pool``) and its notifications are keyed by lead, assignment, phase and rung.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db import SessionFactory, write_transaction
from scrm.leads import cards
from scrm.leads.assignment import contact_of, place, reassign, to_pool
from scrm.leads.history import record_event
from scrm.leads.notify import notify_about_lead
from scrm.leads.routing import dealer_hours, dealer_managers
from scrm.leads.rules import LadderAction, LadderRung
from scrm.leads.services import LeadServices
from scrm.leads.sla import schedule_next_rung
from scrm.models import Dealer, Lead, LeadStatus

log = logging.getLogger(__name__)

CLAIM_BATCH = 100


async def _notify(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    userids: list[str],
    kind: str,
    card: tuple[str, str],
    now: datetime,
) -> None:
    rung = f"lead:{lead.id}:a{lead.assignment_no}:{lead.sla_phase}:{lead.sla_step}"
    await notify_about_lead(
        session, lead, userids, key=rung, kind=kind, card=card, url=services.lead_url(lead.id), now=now
    )


async def _climb(
    session: AsyncSession, services: LeadServices, lead: Lead, dealer: Dealer | None, now: datetime
) -> None:
    rules = services.rules()
    sla = rules.sla_for(dealer.code if dealer is not None else "")
    ladder = sla.ladder(lead.sla_phase)
    if lead.sla_step >= len(ladder):
        lead.next_check_at = None
        return
    rung: LadderRung = ladder[lead.sla_step]
    phase, detail = lead.sla_phase, {"phase": lead.sla_phase, "rung": lead.sla_step, "advisor": lead.advisor_userid}
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    if rung.action == LadderAction.REMIND:
        record_event(session, lead, "sla_remind", now=now, detail=detail)
        await _notify(
            session,
            services,
            lead,
            [lead.advisor_userid],
            "remind",
            cards.reminder(lead, contact, phase=phase, tz=rules.timezone),
            now,
        )
    elif rung.action == LadderAction.NOTIFY_MANAGER:
        managers = await dealer_managers(session, lead.corp_id, lead.dealer_id) or list(rules.routing.pool_notify)
        record_event(session, lead, "sla_manager", now=now, detail={**detail, "managers": managers})
        await _notify(
            session,
            services,
            lead,
            managers,
            "escalation",
            cards.manager_escalation(lead, contact, phase=phase, tz=rules.timezone),
            now,
        )
    elif rung.action == LadderAction.REASSIGN and lead.reassign_count < sla.max_reassign:
        lead.reassign_count += 1
        record_event(session, lead, "sla_reassign", now=now, detail=detail)
        reason = "超时未接单" if phase == "accept" else "超时未联系客户"
        await reassign(session, services, lead, now=now, actor="system", reason=reason)
        return
    else:  # pool, or reassign with the reassignments used up
        record_event(session, lead, "sla_pool", now=now, detail=detail)
        previous = lead.advisor_userid
        await to_pool(session, services, lead, now=now, reason="多次超时未处理")
        if previous:
            await _notify(
                session,
                services,
                lead,
                [previous],
                "reassigned_away",
                cards.reassigned_away(lead, contact, reason="多次超时未处理"),
                now,
            )
        return
    lead.sla_step += 1
    schedule_next_rung(lead, sla, dealer_hours(dealer, rules.timezone) if dealer is not None else None)


async def check_lead(session: AsyncSession, services: LeadServices, lead: Lead, now: datetime) -> None:
    dealer = await session.get(Dealer, lead.dealer_id) if lead.dealer_id is not None else None
    if lead.status == LeadStatus.WAITING.value:
        if dealer is None:
            await to_pool(session, services, lead, now=now, reason="门店不存在")
        else:
            await place(session, services, lead, dealer, now=now)
    elif lead.sla_phase:
        await _climb(session, services, lead, dealer, now)
    else:
        lead.next_check_at = None
    lead.updated_at = now


async def run_sla_checks(session_factory: SessionFactory, services: LeadServices, now: datetime) -> int:
    """Act on every lead due by ``now``; returns how many were handled."""
    handled = 0
    while True:
        async with write_transaction(session_factory) as session:
            statement = (
                select(Lead)
                .where(col(Lead.next_check_at).is_not(None), col(Lead.next_check_at) <= now)
                .order_by(col(Lead.next_check_at))
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True)
            )
            leads = list((await session.exec(statement)).all())
            for lead in leads:
                await check_lead(session, services, lead, now)
        handled += len(leads)
        if len(leads) < CLAIM_BATCH:
            break
    if handled:
        log.info("SLA checks", extra={"leads": handled})
    return handled
