"""From domain events to enrolments: which templates a fact starts, for whom, and which it ends.

Event triggers run inside the transaction of the sync service that saw the fact (a callback, a fetched
detail, a stage change), so an enrolment and its immediate steps commit together with the fact. Schedule
triggers (cron, dates) and ``contact.silent`` are evaluated by the scheduler tick (:func:`run_schedules`).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import exists, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.models import Contact, CustomerGroup, EnrolmentStatus, FollowRelation, SopEnrolment, SyncCheckpoint, Tag
from scrm.sop.engine import SopServices, advance, enrol
from scrm.sop.spec import LEVELS, TemplateBundle
from scrm.sop.subjects import contact_in_audience, group_in_audience, load_contact, load_group
from scrm.sop.timing import CHINA_TZ, next_cron_fire
from scrm.sync._rows import insert_ignore

log = logging.getLogger(__name__)

SCHEDULE_CATCH_UP = timedelta(hours=2)  # a cron/date fire missed while no scheduler ran is still sent this late
SCHEDULE_STEP = "sop_schedule"  # sync_checkpoints.step of schedule fires
SCHEDULE_BATCH = 1000  # subjects enrolled per transaction by a schedule or the silence scan


async def _enrol_contact(
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


async def _enrol_group(
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
) -> bool:
    """Start contact.added templates; True when the catalog sends welcomes itself (built-in stays quiet)."""
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
        await _enrol_contact(
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
    return catalog.has_welcome_step()


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
    from scrm.sop.subjects import contact_tag_names

    for name, _group in rows.all():
        names.add(name)
    _, keys = await contact_tag_names(session, corp_id, external_userid)
    added_keys = {k for k in keys if k.split("/")[-1] in names}
    for bundle in services.catalog().for_event("contact.tagged"):
        matched = [t for t in bundle.template.trigger.tags if t in added_keys]
        if bundle.template.trigger.tags and not matched:
            continue
        await _enrol_contact(
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
        await _enrol_contact(
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
            await _enrol_contact(
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
            await _enrol_contact(
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
        await _enrol_group(
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
            started += await _enrol_group(
                session, services, bundle, corp_id, chat_id, occurrence=f"msg:{msgid}", context=context, at=at
            )
        elif external_userid:
            started += await _enrol_contact(
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


# ---- schedules ------------------------------------------------------------------------------------------


def _latest_fire(bundle: TemplateBundle, now: datetime) -> datetime | None:
    """The schedule's most recent fire time in (now - catch-up, now], or None."""
    trigger = bundle.template.trigger
    since = now - SCHEDULE_CATCH_UP
    if trigger.cron:
        latest: datetime | None = None
        fire = next_cron_fire(trigger.cron, since)
        while fire is not None and fire <= now:
            latest = fire
            fire = next_cron_fire(trigger.cron, fire)
        return latest
    assert trigger.at is not None
    fires = [datetime.combine(day, trigger.at, tzinfo=CHINA_TZ) for day in trigger.dates]
    due = [f for f in fires if since < f <= now]
    return max(due) if due else None


async def run_schedules(session_factory: SessionFactory, services: SopServices, corp_id: str, now: datetime) -> int:
    """Enrol the audiences of cron/date templates whose fire time just passed."""
    started = 0
    for bundle in services.catalog().scheduled():
        fire = _latest_fire(bundle, now)
        if fire is None:
            continue
        occurrence = fire.astimezone(CHINA_TZ).strftime("%Y-%m-%dT%H:%M")
        context: dict[str, object] = {"event": "schedule", "fire": fire.isoformat()}
        started += await _enrol_all(session_factory, services, bundle, corp_id, occurrence, context, fire)
    return started


async def run_silence_scan(session_factory: SessionFactory, services: SopServices, corp_id: str, now: datetime) -> int:
    """Enrol contacts gone silent into contact.silent templates (a slower tick than the schedules)."""
    started = 0
    for bundle in services.catalog().for_event("contact.silent"):
        started += await _enrol_silent(session_factory, services, bundle, corp_id, now)
    return started


async def _enrol_all(
    session_factory: SessionFactory,
    services: SopServices,
    bundle: TemplateBundle,
    corp_id: str,
    occurrence: str,
    context: dict[str, object],
    at: datetime,
) -> int:
    """Every group (or contact with a live relation) of the corp through the audience, in batches.

    Progress is kept in a sync checkpoint per (template, occurrence): a fire is enrolled once, and an
    interrupted run resumes after the last subject it committed.
    """
    scope = f"{bundle.id}:{occurrence}"
    started = 0
    while True:
        async with write_transaction(session_factory, urgent=False) as session:
            checkpoint = await _checkpoint(session, corp_id, scope)
            if checkpoint.done:
                return started
            after = checkpoint.cursor
            if bundle.template.kind == "group":
                subjects = (
                    await session.exec(
                        select(CustomerGroup.chat_id)
                        .where(
                            CustomerGroup.corp_id == corp_id,
                            CustomerGroup.status == "active",
                            col(CustomerGroup.chat_id) > after,
                        )
                        .order_by(col(CustomerGroup.chat_id))
                        .limit(SCHEDULE_BATCH)
                    )
                ).all()
                for chat_id in subjects:
                    started += await _enrol_group(
                        session, services, bundle, corp_id, chat_id, occurrence=occurrence, context=context, at=at
                    )
            else:
                subjects = (
                    await session.exec(
                        select(FollowRelation.external_userid)
                        .where(
                            FollowRelation.corp_id == corp_id,
                            col(FollowRelation.deleted_at).is_(None),
                            col(FollowRelation.external_userid) > after,
                        )
                        .distinct()
                        .order_by(col(FollowRelation.external_userid))
                        .limit(SCHEDULE_BATCH)
                    )
                ).all()
                for external_userid in subjects:
                    started += await _enrol_contact(
                        session,
                        services,
                        bundle,
                        corp_id,
                        external_userid,
                        "",
                        occurrence=occurrence,
                        context=context,
                        at=at,
                    )
            checkpoint.cursor = subjects[-1] if subjects else after
            checkpoint.done = len(subjects) < SCHEDULE_BATCH
            checkpoint.updated_at = utcnow()


async def _checkpoint(session: AsyncSession, corp_id: str, scope: str) -> SyncCheckpoint:
    query = select(SyncCheckpoint).where(
        SyncCheckpoint.corp_id == corp_id, SyncCheckpoint.step == SCHEDULE_STEP, SyncCheckpoint.scope == scope
    )
    found = (await session.exec(query)).first()
    if found is None:
        conn = await session.connection()
        values = {
            "corp_id": corp_id,
            "step": SCHEDULE_STEP,
            "scope": scope,
            "cursor": "",
            "done": False,
            "updated_at": utcnow(),
        }
        await conn.execute(insert_ignore(session, SyncCheckpoint, values, ["corp_id", "step", "scope"]))
        found = (await session.exec(query.with_for_update())).one()
    return found


async def _enrol_silent(
    session_factory: SessionFactory, services: SopServices, bundle: TemplateBundle, corp_id: str, now: datetime
) -> int:
    """Contacts with no message or click (and no add) for ``days``; one enrolment per silent spell."""
    days = bundle.template.trigger.days or 0
    cutoff = now - timedelta(days=days)
    started = 0
    async with write_transaction(session_factory, urgent=False) as session:
        rows = (
            await session.exec(
                select(Contact.external_userid, Contact.last_active_at, FollowRelation.added_at)
                .join(
                    FollowRelation,
                    (col(FollowRelation.corp_id) == col(Contact.corp_id))
                    & (col(FollowRelation.external_userid) == col(Contact.external_userid)),
                )
                .where(
                    Contact.corp_id == corp_id,
                    col(FollowRelation.deleted_at).is_(None),
                    (col(Contact.last_active_at) < cutoff)
                    | (col(Contact.last_active_at).is_(None) & (col(FollowRelation.added_at) < cutoff)),
                    ~exists().where(  # already enrolled for this silent spell
                        col(SopEnrolment.corp_id) == corp_id,
                        col(SopEnrolment.template_id) == bundle.id,
                        col(SopEnrolment.subject_type) == "contact",
                        col(SopEnrolment.subject_id) == col(Contact.external_userid),
                        col(SopEnrolment.enrolled_at)
                        >= func.coalesce(col(Contact.last_active_at), col(FollowRelation.added_at)),
                    ),
                )
                .limit(SCHEDULE_BATCH)
            )
        ).all()
        seen: set[str] = set()
        for external_userid, last_active, added_at in rows:
            if external_userid in seen:
                continue
            seen.add(external_userid)
            since = last_active or added_at
            occurrence = f"silent:{since.astimezone(CHINA_TZ).strftime('%Y-%m-%d') if since else ''}"
            context: dict[str, object] = {"event": "contact.silent", "days": days}
            started += await _enrol_contact(
                session, services, bundle, corp_id, external_userid, "", occurrence=occurrence, context=context, at=now
            )
    return started
