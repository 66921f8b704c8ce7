"""Schedule triggers (cron, dates) and the ``contact.silent`` scan, run by the leader's ticks.

A fire enrols the template's whole audience once: progress is kept in a sync checkpoint per (template,
occurrence), so a second leader, a restart or a retry resumes instead of starting over, and the unique
enrolment per occurrence makes any overlap harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exists, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.models import Contact, CustomerGroup, FollowRelation, SopEnrolment, SyncCheckpoint
from scrm.rows import insert_ignore
from scrm.sop.services import SopServices
from scrm.sop.spec import TemplateBundle
from scrm.sop.triggers import enrol_contact, enrol_group
from scrm.timing import CHINA_TZ, next_cron_fire

log = logging.getLogger(__name__)

SCHEDULE_CATCH_UP = timedelta(hours=2)  # a cron/date fire missed while no scheduler ran is still sent this late
SCHEDULE_STEP = "sop_schedule"  # sync_checkpoints.step of schedule fires
SCHEDULE_BATCH = 1000  # subjects enrolled per transaction by a schedule or the silence scan


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
            subjects = await _subjects_after(session, bundle.template.kind, corp_id, after)
            for subject in subjects:
                if bundle.template.kind == "group":
                    started += await enrol_group(
                        session, services, bundle, corp_id, subject, occurrence=occurrence, context=context, at=at
                    )
                else:
                    started += await enrol_contact(
                        session, services, bundle, corp_id, subject, "", occurrence=occurrence, context=context, at=at
                    )
            checkpoint.cursor = subjects[-1] if subjects else after
            checkpoint.done = len(subjects) < SCHEDULE_BATCH
            checkpoint.updated_at = utcnow()


async def _subjects_after(session: AsyncSession, kind: str, corp_id: str, after: str) -> list[str]:
    """The next batch of a schedule's subjects after ``after``: active groups, or contacts with a live relation."""
    if kind == "group":
        statement = (
            select(CustomerGroup.chat_id)
            .where(
                CustomerGroup.corp_id == corp_id,
                CustomerGroup.status == "active",
                col(CustomerGroup.chat_id) > after,
            )
            .order_by(col(CustomerGroup.chat_id))
            .limit(SCHEDULE_BATCH)
        )
    else:
        statement = (
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
    return list((await session.exec(statement)).all())


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
            started += await enrol_contact(
                session, services, bundle, corp_id, external_userid, "", occurrence=occurrence, context=context, at=now
            )
    return started
