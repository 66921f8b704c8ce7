"""From domain events to enrolments: which templates a fact starts, for whom, and which it ends.

Event triggers run inside the transaction of the sync service that saw the fact (a callback, a fetched
detail, a stage change), so an enrolment and its immediate steps commit together with the fact. Schedule
triggers (cron, dates) and ``contact.silent`` are evaluated by the scheduler tick (:mod:`scrm.sop.schedules`).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.audience import LEVELS, contact_in_audience, contact_tag_names, group_in_audience, load_contact, load_group
from scrm.models import Contact, EnrolmentStatus, SopEnrolment, Tag
from scrm.sop.engine import advance, enrol
from scrm.sop.services import SopServices
from scrm.sop.spec import TemplateBundle

log = logging.getLogger(__name__)


async def enrol_contact(
    session: AsyncSession,
    services: SopServices,
    bundle: TemplateBundle,
    corp_id: str,
    external_userid: str,
    staff_userid: str,
    *,
    occurrence: str,
    context: dict[str, object],
    at: datetime,
) -> bool:
    facts = await load_contact(session, corp_id, external_userid, staff_userid)
    if facts is None or not contact_in_audience(bundle.template.audience, facts):
        return False
    return await enrol(
        session,
        services,
        bundle,
        corp_id=corp_id,
        subject_type="contact",
        subject_id=external_userid,
        occurrence=occurrence,
        staff_userid=facts.staff_userid,
        context=context,
        at=at,
    )


async def enrol_group(
    session: AsyncSession,
    services: SopServices,
    bundle: TemplateBundle,
    corp_id: str,
    chat_id: str,
    *,
    occurrence: str,
    context: dict[str, object],
    at: datetime,
) -> bool:
    facts = await load_group(session, corp_id, chat_id)
    if facts is None or not group_in_audience(bundle.template.audience, facts):
        return False
    return await enrol(
        session,
        services,
        bundle,
        corp_id=corp_id,
        subject_type="group",
        subject_id=chat_id,
        occurrence=occurrence,
        staff_userid=facts.owner,
        context=context,
        at=at,
    )


async def contact_added(
    session: AsyncSession,
    services: SopServices,
    corp_id: str,
    *,
    external_userid: str,
    userid: str,
    state: str,
    channel: str,
    dealer_code: str,
    welcome_code: str,
    event_time: datetime,
) -> None:
    """Start the contact.added templates whose filters match (the one with a welcome step sends the welcome)."""
    catalog = services.catalog()
    context: dict[str, object] = {
        "event": "contact.added",
        "welcome_code": welcome_code,
        "event_time": event_time.isoformat(),
        "state": state,
    }
    for bundle in catalog.for_event("contact.added"):
        trigger = bundle.template.trigger
        if (
            (trigger.channel and channel not in trigger.channel)
            or (trigger.dealer and dealer_code not in trigger.dealer)
            or (trigger.staff and userid not in trigger.staff)
            or (trigger.state and not fnmatch.fnmatchcase(state, trigger.state))
        ):
            continue
        await enrol_contact(
            session,
            services,
            bundle,
            corp_id,
            external_userid,
            userid,
            occurrence=f"{userid}@{int(event_time.timestamp())}",
            context=context,
            at=event_time,
        )


async def recheck_exits(
    session: AsyncSession, services: SopServices, corp_id: str, subject_type: str, subject_id: str, at: datetime
) -> None:
    """A fact changed (stage, tags, relation deleted…): let every open enrolment of the subject look again now,
    so an exit condition cancels pending steps at once rather than at their due time."""
    rows = await session.exec(
        select(SopEnrolment).where(
            SopEnrolment.corp_id == corp_id,
            SopEnrolment.subject_type == subject_type,
            SopEnrolment.subject_id == subject_id,
            SopEnrolment.status == EnrolmentStatus.ACTIVE.value,
        )
    )
    for enrolment in rows.all():
        if enrolment.next_due_at is not None and enrolment.next_due_at > at:
            # not due: only the exit check runs (advance returns at the not-yet-due step)
            await advance(session, services, enrolment, at)


async def tags_added(
    session: AsyncSession,
    services: SopServices,
    corp_id: str,
    external_userid: str,
    userid: str,
    tag_ids: Iterable[str],
    *,
    at: datetime,
) -> None:
    ids = sorted(set(tag_ids))
    if not ids:
        return
    names: set[str] = set()
    rows = await session.exec(select(Tag.name, Tag.group_id).where(Tag.corp_id == corp_id, col(Tag.tag_id).in_(ids)))
    for name, _group in rows.all():
        names.add(name)
    _, keys = await contact_tag_names(session, corp_id, external_userid)
    added_keys = {k for k in keys if k.split("/")[-1] in names}
    for bundle in services.catalog().for_event("contact.tagged"):
        matched = [t for t in bundle.template.trigger.tags if t in added_keys]
        if bundle.template.trigger.tags and not matched:
            continue
        await enrol_contact(
            session,
            services,
            bundle,
            corp_id,
            external_userid,
            userid,
            occurrence=f"tag:{','.join(ids)}@{int(at.timestamp())}",
            context={"event": "contact.tagged", "tag": matched[0] if matched else ""},
            at=at,
        )
    await recheck_exits(session, services, corp_id, "contact", external_userid, at)


async def stage_changed(
    session: AsyncSession,
    services: SopServices,
    corp_id: str,
    external_userid: str,
    old: str,
    new: str,
    *,
    at: datetime,
) -> None:
    occurrence = f"stage:{new}@{int(at.timestamp())}"
    await recheck_exits(session, services, corp_id, "contact", external_userid, at)
    for bundle in services.catalog().for_event("contact.stage_changed"):
        if bundle.template.trigger.to and new not in bundle.template.trigger.to:
            continue
        await enrol_contact(
            session,
            services,
            bundle,
            corp_id,
            external_userid,
            "",
            occurrence=occurrence,
            context={"event": "contact.stage_changed", "stage": new, "from": old},
            at=at,
        )
    if new == "lost" and old != "lost":
        for bundle in services.catalog().for_event("lead.lost"):
            await enrol_contact(
                session,
                services,
                bundle,
                corp_id,
                external_userid,
                "",
                occurrence=occurrence,
                context={"event": "lead.lost", "stage": new, "from": old},
                at=at,
            )


def _heat(level: str) -> int:
    """H → 4 … C → 1, unknown → 0."""
    return len(LEVELS) - LEVELS.index(level) if level in LEVELS else 0


async def intent_level_changed(
    session: AsyncSession,
    services: SopServices,
    corp_id: str,
    external_userid: str,
    old: str,
    new: str,
    *,
    at: datetime,
) -> None:
    await recheck_exits(session, services, corp_id, "contact", external_userid, at)
    for bundle in services.catalog().for_event("contact.intent_level"):
        target = _heat(bundle.template.trigger.level or "")
        if _heat(new) >= target > _heat(old):  # reached the level (or a hotter one) just now
            await enrol_contact(
                session,
                services,
                bundle,
                corp_id,
                external_userid,
                "",
                occurrence=f"level:{new}@{int(at.timestamp())}",
                context={"event": "contact.intent_level", "level": new, "from": old},
                at=at,
            )


async def member_joined(
    session: AsyncSession, services: SopServices, corp_id: str, chat_id: str, members: list[str], *, at: datetime
) -> None:
    customers = [m for m in members if m.startswith(("wm", "wo"))] or members
    for bundle in services.catalog().for_event("group.member_joined"):
        await enrol_group(
            session,
            services,
            bundle,
            corp_id,
            chat_id,
            occurrence=f"join:{int(at.timestamp())}:{customers[0] if customers else ''}",
            context={"event": "group.member_joined", "members": customers},
            at=at,
        )


def _keyword_hit(bundle: TemplateBundle, text: str) -> str | None:
    trigger = bundle.template.trigger
    for keyword in trigger.keywords:
        if keyword and keyword in text:
            return keyword
    if trigger.regex:
        match = re.search(trigger.regex, text)
        if match:
            return match.group(0)
    return None


async def message_received(
    session: AsyncSession,
    services: SopServices,
    corp_id: str,
    *,
    msgid: str,
    text: str,
    chat_type: str,
    chat_id: str,
    external_userid: str,
    userid: str,
    at: datetime,
) -> int:
    """An inbound customer message (group or 1v1): mark the contact active, answer keywords. Returns how many
    templates it started."""
    if external_userid:
        contact = (
            await session.exec(
                select(Contact).where(Contact.corp_id == corp_id, Contact.external_userid == external_userid)
            )
        ).first()
        if contact is not None and (contact.last_active_at is None or contact.last_active_at < at):
            contact.last_active_at = at
    started = 0
    for bundle in services.catalog().for_event("message.keyword"):
        scope = bundle.template.trigger.scope
        if scope != "any" and scope != chat_type:
            continue
        keyword = _keyword_hit(bundle, text)
        if keyword is None:
            continue
        context: dict[str, object] = {"event": "message.keyword", "text": text, "keyword": keyword, "msgid": msgid}
        if bundle.template.kind == "group":
            if chat_type != "group" or not chat_id:
                continue
            started += await enrol_group(
                session, services, bundle, corp_id, chat_id, occurrence=f"msg:{msgid}", context=context, at=at
            )
        elif external_userid:
            started += await enrol_contact(
                session,
                services,
                bundle,
                corp_id,
                external_userid,
                userid,
                occurrence=f"msg:{msgid}",
                context=context,
                at=at,
            )
    return started
