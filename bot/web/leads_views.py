"""JSON shapes of leads for the staff API: a lead, its detail (contact, reasons, what they asked, history), and
the queries behind the list and detail routes (who sees which leads is :mod:`bot.web.authz`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.web.authz import Principal, lead_scope, may_see_lead
from scrm.leads.actions import LeadActionError
from scrm.leads.assignment import contact_of
from scrm.leads.rules import LOST_REASONS
from scrm.leads.transitions import status_name
from scrm.models import Dealer, Lead, LeadEvent, LeadStatus

LIST_LIMIT = 500


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def lead_json(lead: Lead, dealer: Dealer | None) -> dict[str, Any]:
    return {
        "id": lead.id,
        "status": lead.status,
        "status_name": status_name(lead.status),
        "external_userid": lead.external_userid,
        "dealer": {"id": dealer.id, "code": dealer.code, "name": dealer.name} if dealer is not None else None,
        "advisor_userid": lead.advisor_userid,
        "trigger": lead.trigger,
        "channel": lead.channel,
        "route_rule": lead.route_rule,
        "score": lead.score,
        "level": lead.level,
        "reach": lead.reach,
        "sla": {"phase": lead.sla_phase, "deadline_at": _iso(lead.sla_deadline_at), "step": lead.sla_step},
        "lost_reason": lead.lost_reason,
        "lost_reason_name": LOST_REASONS.get(lead.lost_reason, ""),
        "lost_note": lead.lost_note,
        "status_before_lost": lead.status_before_lost,
        "created_at": _iso(lead.created_at),
        "assigned_at": _iso(lead.assigned_at),
        "accepted_at": _iso(lead.accepted_at),
        "contacted_at": _iso(lead.contacted_at),
        "test_drive_at": _iso(lead.test_drive_at),
        "ordered_at": _iso(lead.ordered_at),
        "closed_at": _iso(lead.closed_at),
    }


def event_json(event: LeadEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "actor": event.actor,
        "advisor_userid": event.advisor_userid,
        "detail": event.detail or {},
        "at": _iso(event.at),
    }


async def _dealers(session: AsyncSession, ids: set[int]) -> dict[int, Dealer]:
    if not ids:
        return {}
    rows = (await session.exec(select(Dealer).where(col(Dealer.id).in_(ids)))).all()
    return {d.id: d for d in rows if d.id is not None}


async def lead_with_dealer(session: AsyncSession, lead: Lead) -> dict[str, Any]:
    dealer = await session.get(Dealer, lead.dealer_id) if lead.dealer_id is not None else None
    return lead_json(lead, dealer)


def parse_status(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value not in {s.value for s in LeadStatus}:
        valid = "、".join(f"{s.value}（{status_name(s.value)}）" for s in LeadStatus)
        raise LeadActionError("bad_status", f"状态 “{value}” 无效，可选：{valid}", 400)
    return value


async def list_leads(session: AsyncSession, principal: Principal, status: str | None) -> list[dict[str, Any]]:
    """The leads in the principal's scope (:func:`bot.web.authz.lead_scope`): open ones, or those of ``status``
    (which may ask for closed ones)."""
    scope = lead_scope(principal)
    statement = select(Lead).where(Lead.corp_id == principal.corp_id)
    if scope.dealer_id is not None:
        statement = statement.where(Lead.dealer_id == scope.dealer_id)
    elif not scope.every:
        statement = statement.where(Lead.advisor_userid == scope.advisor_userid)
    if status is None:
        statement = statement.where(col(Lead.closed_at).is_(None))
    else:
        statement = statement.where(Lead.status == status)
    leads = list((await session.exec(statement.order_by(col(Lead.id).desc()).limit(LIST_LIMIT))).all())
    dealers = await _dealers(session, {lead.dealer_id for lead in leads if lead.dealer_id is not None})
    return [lead_json(lead, dealers.get(lead.dealer_id) if lead.dealer_id is not None else None) for lead in leads]


async def lead_detail(session: AsyncSession, principal: Principal, lead_id: int) -> dict[str, Any]:
    lead = (await session.exec(select(Lead).where(Lead.id == lead_id, Lead.corp_id == principal.corp_id))).first()
    if lead is None:
        raise LeadActionError("not_found", f"线索 {lead_id} 不存在", 404)
    if not may_see_lead(principal, lead):
        raise LeadActionError("forbidden", "您无权查看这条线索", 403)
    contact = await contact_of(session, lead.corp_id, lead.external_userid)
    history = (
        await session.exec(
            select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(col(LeadEvent.at), col(LeadEvent.id))
        )
    ).all()
    body = await lead_with_dealer(session, lead)
    body["contact"] = (
        {
            "external_userid": contact.external_userid,
            "name": contact.name,
            "score": contact.score,
            "level": contact.intent_level or "",
            "stage": contact.stage,
            "city": contact.city,
        }
        if contact is not None
        else None
    )
    body["reasons"] = lead.reasons or []
    body["asked"] = lead.asked
    body["history"] = [event_json(e) for e in history]
    return body
