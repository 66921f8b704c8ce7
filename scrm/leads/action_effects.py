"""What a staff action on a lead sets off beyond the lead row (see :mod:`scrm.leads.actions`): the SLA clock by the
dealer's opening hours, a notification with the lead card, the contact's lifecycle stage, the customer's name."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.leads.assignment import contact_of
from scrm.leads.calendar import OpeningHours
from scrm.leads.notify import notify_about_lead
from scrm.leads.rules import LOST_REASONS
from scrm.leads.services import LeadServices
from scrm.leads.sla import start_phase
from scrm.lifecycle import change_stage
from scrm.models import Dealer, Lead, SlaPhase, Stage

log = logging.getLogger(__name__)


async def dealer_of(session: AsyncSession, lead: Lead) -> Dealer | None:
    return await session.get(Dealer, lead.dealer_id) if lead.dealer_id is not None else None


async def start_sla(session: AsyncSession, services: LeadServices, lead: Lead, phase: SlaPhase, now: datetime) -> None:
    rules = services.rules()
    dealer = await dealer_of(session, lead)
    hours = OpeningHours.parse(dealer.opening_hours, rules.timezone) if dealer is not None else None
    start_phase(lead, phase, now=now, sla=rules.sla_for(dealer.code if dealer is not None else ""), hours=hours)


async def notify(
    session: AsyncSession,
    services: LeadServices,
    lead: Lead,
    userids: list[str],
    *,
    kind: str,
    key: str,
    title: str,
    description: str,
    now: datetime,
) -> None:
    card = (title, description)
    await notify_about_lead(
        session, lead, userids, key=key, kind=kind, card=card, url=services.lead_url(lead.id), now=now
    )


async def customer_name(session: AsyncSession, lead: Lead) -> str:
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    return (contact.name if contact is not None else "") or "客户"


async def change_contact_stage(
    session: AsyncSession, services: LeadServices, lead: Lead, stage: Stage, *, now: datetime, actor: str
) -> None:
    """The contact's stage follows the lead's outcome (delivered → 车主, approved loss → 战败); the change reaches
    the other features through the lead services' lifecycle hooks."""
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    if contact is None:
        log.warning("lead without a contact row", extra={"lead": lead.id})
        return
    if stage == Stage.LOST and contact.stage == Stage.OWNER.value:
        return  # an owner who did not buy again stays an owner
    reason = "交车" if stage == Stage.OWNER else f"战败审批通过：{LOST_REASONS.get(lead.lost_reason, lead.lost_reason)}"
    await change_stage(
        session,
        lead.corp_id,
        lead.external_userid,
        stage.value,
        at=now,
        actor=actor,
        reason=reason,
        hooks=services.hooks,
    )
