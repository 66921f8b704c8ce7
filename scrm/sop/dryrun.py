"""A dry run of one SOP template against the database: who would enter, when each step would fire, how many
messages go out per day, and where the contact policy would hold sends back. Nothing is written.

How the entrants are read (the report carries this as ``reading``):

- **event triggers** (contact.added, contact.tagged, contact.stage_changed, contact.intent_level, lead.lost,
  message.keyword, group.member_joined): *the current audience enrolled now*. Every subject that today
  matches the audience and the trigger's filters enters at ``start``, as if the event happened for each of
  them at that moment: ``contact.added`` filters the relation's channel, dealer, staff member and state;
  ``contact.tagged`` needs one of the trigger's tags on the contact now; ``contact.stage_changed`` the
  stage named in ``to``; ``contact.intent_level`` the level or a hotter one; ``lead.lost`` the stage
  ``lost``. Keyword templates cannot know future messages: every audience member counts as one hit.
- **contact.silent**: a contact silent for ``days`` at ``start`` enters then; one that reaches ``days`` of
  silence inside the window enters on that day (assuming it stays silent). A contact already enrolled for
  its current silent spell is left out, like the silence scan does.
- **cron / dates**: every fire inside the window × the audience (as it is now).

Facts stay as they are now: no stage changes during the window, ``add_tags`` steps are not applied, and
``start_sop`` is listed but not followed. Caps and quotas count the touches already in the ledger plus this
template's simulated sends; sends of other templates still to come are not simulated. A subject that meets
an exit condition now would leave at once and is counted in ``excluded``.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.audience import LEVELS, ContactFacts, contact_in_audience, group_in_audience, load_contact, load_group
from scrm.contact_policy import Policy
from scrm.models import CustomerGroup, FollowRelation, SopEnrolment
from scrm.sop.dryrun_report import READING_EVENT, READING_SCHEDULE, READING_SILENT, DryRunReport, Entry
from scrm.sop.dryrun_simulation import Facts, Flight, Ledger, Simulation, identity
from scrm.sop.exits import contact_exit_reason, group_exit_reason
from scrm.sop.spec import TemplateBundle
from scrm.timing import CHINA_TZ, cron_fires_between

__all__ = ["DryRunReport", "dry_run"]


# ---- who enters -------------------------------------------------------------------------------------------


def _heat(level: str) -> int:
    return len(LEVELS) - LEVELS.index(level) if level in LEVELS else 0


def _trigger_matches(bundle: TemplateBundle, facts: ContactFacts) -> bool:
    trigger = bundle.template.trigger
    event = trigger.event
    if event == "contact.added":
        return not (
            (trigger.channel and facts.channel not in trigger.channel)
            or (trigger.dealer and facts.dealer_code not in trigger.dealer)
            or (trigger.staff and facts.staff_userid not in trigger.staff)
            or (trigger.state and not fnmatch.fnmatchcase(facts.state, trigger.state))
        )
    if event == "contact.tagged":
        return not trigger.tags or any(tag in facts.tags for tag in trigger.tags)
    if event == "contact.stage_changed":
        return not trigger.to or facts.stage in trigger.to
    if event == "contact.intent_level":
        return _heat(facts.intent_level) >= _heat(trigger.level or "") > 0
    if event == "lead.lost":
        return facts.stage == "lost"
    return True


async def _subjects(session: AsyncSession, bundle: TemplateBundle, corp_id: str) -> list[Facts]:
    """Every group (active) or contact (with a live relation) of the corp that is in the audience now."""
    audience = bundle.template.audience
    found: list[Facts] = []
    if bundle.template.kind == "group":
        chat_ids = await session.exec(
            select(CustomerGroup.chat_id)
            .where(col(CustomerGroup.corp_id) == corp_id, col(CustomerGroup.status) == "active")
            .order_by(col(CustomerGroup.chat_id))
        )
        for chat_id in chat_ids.all():
            group = await load_group(session, corp_id, chat_id)
            if group is not None and group_in_audience(audience, group):
                found.append(group)
        return found
    external_userids = await session.exec(
        select(FollowRelation.external_userid)
        .where(col(FollowRelation.corp_id) == corp_id, col(FollowRelation.deleted_at).is_(None))
        .distinct()
        .order_by(col(FollowRelation.external_userid))
    )
    for external_userid in external_userids.all():
        contact = await load_contact(session, corp_id, external_userid)
        if contact is not None and contact_in_audience(audience, contact) and _trigger_matches(bundle, contact):
            found.append(contact)
    return found


async def _silent_spells(session: AsyncSession, bundle: TemplateBundle, corp_id: str) -> dict[str, datetime]:
    """The latest enrolment of each contact in this template (a spell it started is already served)."""
    rows = await session.exec(
        select(SopEnrolment.subject_id, func.max(SopEnrolment.enrolled_at))
        .where(
            col(SopEnrolment.corp_id) == corp_id,
            col(SopEnrolment.template_id) == bundle.id,
            col(SopEnrolment.subject_type) == "contact",
        )
        .group_by(col(SopEnrolment.subject_id))
    )
    return {subject_id: enrolled_at for subject_id, enrolled_at in rows.all()}


def _fires(bundle: TemplateBundle, start: datetime, end: datetime) -> list[datetime]:
    trigger = bundle.template.trigger
    if trigger.cron:
        return cron_fires_between(trigger.cron, start, end)
    assert trigger.at is not None  # dates always come with at (spec)
    moments = (datetime.combine(day, trigger.at, tzinfo=CHINA_TZ) for day in trigger.dates)
    return sorted(m for m in moments if start <= m < end)


def _exit_reason(bundle: TemplateBundle, facts: Facts) -> str | None:
    rule = bundle.template.exit
    if isinstance(facts, ContactFacts):
        return contact_exit_reason(rule, facts)
    return group_exit_reason(rule, facts)


async def _entries(
    session: AsyncSession, bundle: TemplateBundle, corp_id: str, start: datetime, end: datetime, report: DryRunReport
) -> list[tuple[Entry, Facts]]:
    trigger = bundle.template.trigger
    found: list[tuple[Entry, Facts]] = []
    moments: list[tuple[datetime, str]] = [(start, "")]
    if trigger.event is None:
        moments = [(f, f.astimezone(CHINA_TZ).strftime("%Y-%m-%dT%H:%M")) for f in _fires(bundle, start, end)]
    served = await _silent_spells(session, bundle, corp_id) if trigger.event == "contact.silent" else {}
    for facts in await _subjects(session, bundle, corp_id):
        reason = _exit_reason(bundle, facts)
        if reason is not None:
            report.excluded[reason] += 1
            continue
        subject_type, subject_id, name = identity(facts)
        if isinstance(facts, ContactFacts) and trigger.event == "contact.silent":
            since = facts.last_active_at or facts.added_at
            if since is None or (subject_id in served and served[subject_id] >= since):
                continue
            silent_from = since + timedelta(days=trigger.days or 0)
            if silent_from >= end:
                continue
            moments = [(max(start, silent_from), f"silent:{since.astimezone(CHINA_TZ).date().isoformat()}")]
        for at, occurrence in moments:
            found.append((Entry(subject_type, subject_id, name, at, occurrence), facts))
    return found


async def dry_run(
    session: AsyncSession, bundle: TemplateBundle, policy: Policy, *, corp_id: str, start: datetime, days: int
) -> DryRunReport:
    """Simulate ``bundle`` for ``days`` from ``start`` on the data of ``corp_id``; reads only."""
    end = start + timedelta(days=days)
    template = bundle.template
    event = template.trigger.event
    reading = READING_SCHEDULE if event is None else READING_SILENT if event == "contact.silent" else READING_EVENT
    report = DryRunReport(
        template.id, template.name, template.kind, bundle.version, template.enabled, template.trigger.name,
        start, end, reading, [template.step_id(i) for i in range(len(template.steps))],
    )  # fmt: skip
    entries = await _entries(session, bundle, corp_id, start, end, report)
    ledger = Ledger(policy)
    await ledger.load(session, corp_id, min(policy.month_window(start)[0], policy.week_window(start)[0]))
    simulation = Simulation(bundle, policy, ledger, report)
    for entry, facts in entries:
        report.entries.append(entry)
        simulation.push(entry.enrolled_at, Flight(entry, facts))
    simulation.run()
    report.steps.sort(key=lambda s: (s.at, s.subject_id, s.step_id))
    report.entries.sort(key=lambda e: (e.enrolled_at, e.subject_id))
    return report
