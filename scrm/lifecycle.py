"""A contact's life as the feature packages tell each other about it, and the two facts every feature may change:
the lifecycle stage (潜客 → 意向 → 车主, or 战败) and the intent level (H/A/B/C).

The feature packages (sync, intent, sop, leads, campaigns) never import each other. When one learns something
another may act on — a customer was added, tagged, said something, booked a test drive, changed level — it calls
the matching method of the :class:`LifecycleHooks` it was handed. The base class does nothing: a bare
``lianyi sync`` or a unit test of one layer runs with :data:`NO_HOOKS`. The process's services object
(:class:`scrm.services.Services`, built once at start and passed explicitly) implements every hook by calling
the features that care, in the same transaction as the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.audience import LEVELS
from scrm.errors import DomainError
from scrm.models import Contact, Message, Stage


@dataclass(frozen=True, slots=True)
class ContactAdded:
    """A customer added a staff member (or was added): the relation as the callback described it."""

    external_userid: str
    userid: str
    state: str
    channel: str
    dealer_code: str
    welcome_code: str
    event_time: datetime


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A stored text message, customer or staff, in a single chat or a group."""

    msgid: str
    text: str
    chat_type: str
    chat_id: str
    external_userid: str
    userid: str
    at: datetime


class LifecycleHooks:
    """Every fact one feature package tells the others. Each method runs inside the caller's transaction; the
    base implementation does nothing (features that are not running ignore the fact)."""

    async def contact_added(self, session: AsyncSession, corp_id: str, added: ContactAdded) -> None:
        """A new relation (with WeCom's one-shot welcome code when it allows a welcome)."""

    async def contact_tagged(
        self,
        session: AsyncSession,
        corp_id: str,
        external_userid: str,
        userid: str,
        tag_ids: Sequence[str],
        at: datetime,
    ) -> None:
        """Tags were added to a contact's relation with ``userid``."""

    async def subject_changed(
        self, session: AsyncSession, corp_id: str, subject_type: str, subject_id: str, at: datetime
    ) -> None:
        """A contact or group changed in a way that may end what it is enrolled in (e.g. a deleted relation)."""

    async def group_members_joined(
        self,
        session: AsyncSession,
        corp_id: str,
        chat_id: str,
        members: Sequence[str],
        at: datetime,
        join_scene: int | None,
    ) -> None:
        """Members joined a customer group (customers and staff; ids as WeCom gave them)."""

    async def customer_transfer_failed(
        self,
        session: AsyncSession,
        corp_id: str,
        *,
        takeover_userid: str,
        external_userid: str,
        fail_reason: str,
        at: datetime,
    ) -> None:
        """WeCom reported that a customer transfer to ``takeover_userid`` failed."""

    async def message_stored(self, session: AsyncSession, corp_id: str, message: ReceivedMessage) -> None:
        """A customer's text message was stored and scored (keyword SOPs may answer it)."""

    async def staff_messaged(self, session: AsyncSession, corp_id: str, message: Message, at: datetime) -> None:
        """A staff member's message to a customer was stored (it may be the first contact on a lead)."""

    async def behaviour_recorded(
        self, session: AsyncSession, corp_id: str, external_userid: str, code: str, at: datetime
    ) -> None:
        """A behaviour signal (``test_drive_booking``, ``form``, ``click``…) was recorded for a contact."""

    async def stage_changed(
        self, session: AsyncSession, corp_id: str, external_userid: str, old: str, new: str, at: datetime
    ) -> None:
        """The contact's lifecycle stage moved from ``old`` to ``new``."""

    async def intent_level_changed(
        self, session: AsyncSession, corp_id: str, external_userid: str, old: str, new: str, at: datetime
    ) -> None:
        """The contact's intent level moved from ``old`` (may be empty) to ``new``."""


NO_HOOKS = LifecycleHooks()


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
    hooks: LifecycleHooks,
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
    await hooks.stage_changed(session, corp_id, external_userid, old, new, at)
    return True


async def change_intent_level(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    level: str,
    *,
    at: datetime,
    hooks: LifecycleHooks,
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
    await hooks.intent_level_changed(session, corp_id, external_userid, old, level, at)
    return True
