"""A contact's lifecycle stage (潜客 → 意向 → 车主, or 战败) and intent level (H/A/B/C), changed in one place so
every change is audited and reaches the SOP engine (stage_changed, lead.lost, intent_level triggers; exits)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.audience import LEVELS
from scrm.errors import DomainError
from scrm.leads import handoff
from scrm.models import Contact, Stage
from scrm.sop import hooks, triggers


async def _contact(session: AsyncSession, corp_id: str, external_userid: str) -> Contact:
    contact = (
        await session.exec(
            select(Contact).where(Contact.corp_id == corp_id, Contact.external_userid == external_userid)
        )
    ).first()
    if contact is None:
        raise DomainError(f"unknown contact {external_userid}")
    return contact


async def change_stage(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    stage: str,
    *,
    at: datetime,
    actor: str = "system",
    reason: str = "",
) -> bool:
    """Move the contact to ``stage``; False when it was already there."""
    new = Stage(stage).value
    contact = await _contact(session, corp_id, external_userid)
    old = contact.stage
    if old == new:
        return False
    contact.stage = new
    contact.updated_at = at
    detail = {"from": old, "to": new, "reason": reason, "at": at.isoformat()}
    await audit.record(session, corp_id, "contact.stage_changed", "contact", external_userid, detail, actor=actor)
    services = hooks.active()
    if services is not None:
        await triggers.stage_changed(session, services, corp_id, external_userid, old, new, at=at)
    return True


async def change_intent_level(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    level: str,
    *,
    at: datetime,
    score: int | None = None,
    actor: str = "system",
) -> bool:
    """Set the contact's intent level (and score); False when the level did not change."""
    if level not in LEVELS:
        raise DomainError(f"intent level must be one of {', '.join(LEVELS)}, got {level!r}")
    contact = await _contact(session, corp_id, external_userid)
    old = contact.intent_level or ""
    if score is not None:
        contact.score = score
    if old == level:
        return False
    contact.intent_level = level
    contact.updated_at = at
    detail = {"from": old, "to": level, "score": contact.score, "at": at.isoformat()}
    await audit.record(session, corp_id, "contact.intent_level", "contact", external_userid, detail, actor=actor)
    services = hooks.active()
    if services is not None:
        await triggers.intent_level_changed(session, services, corp_id, external_userid, old, level, at=at)
    await handoff.consider(session, corp_id, external_userid, trigger=f"level_{level}", now=at)
    return True
