"""The SOP engine: enrol subjects into templates and run each due step exactly once, within the policy.

Exactly once, in three layers:

1. an enrolment is unique per (corp, template, subject, occurrence): a replayed trigger enrols nobody twice;
2. a tick claims due enrolments with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has one writer), so two
   schedulers — e.g. the old and the new leader during a failover — never hold the same enrolment;
3. a step's deterministic key (``sop:<template>:<subject>:<occurrence>:<step>``) is inserted into
   ``sop_step_runs`` in the same transaction that writes its outbox commands (whose idempotency keys derive
   from it). A crash before commit leaves neither; a second attempt finds the key and moves on.

Versions: an enrolment stores the template version it began with and finishes on it, whatever happens to the
file; new enrolments take the current version. A template deleted or disabled in a good catalog ends its
enrolments (``cancelled``) at their next step and in the sweep after each reload.

Timing: every step's due time counts from the enrolment (``after``/``at``/``weekday``, see
:func:`scrm.timing.step_due`); a step never runs before the one above it. The contact policy may move a due
step (quiet hours, caps, quota) or skip it; a skip is recorded like a run, with its reason.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.audience import ContactFacts, GroupFacts, load_contact, load_group
from scrm.contact_policy import decide
from scrm.db_types import utcnow
from scrm.models import EnrolmentStatus, SopEnrolment
from scrm.sop import actions, statements
from scrm.sop.catalog import Catalog
from scrm.sop.exits import contact_exit_reason, group_exit_reason
from scrm.sop.render import SopRenderer, SopRenderError
from scrm.sop.services import SopServices
from scrm.sop.spec import TemplateBundle
from scrm.templating.context import build_context
from scrm.timing import step_due
from scrm.touches import count_touches

log = logging.getLogger(__name__)

KEY_MAX = 200
RETRY_AFTER = timedelta(minutes=5)  # a step that raised is tried again this much later
TOUCH_KINDS = frozenset({"private_message", "advisor_task", "group_message"})


def step_key(enrolment: SopEnrolment, step_id: str) -> str:
    """The step's deterministic id; long subject ids are hashed to keep it within the column."""
    key = (
        f"sop:{enrolment.template_id}:{enrolment.subject_type}:{enrolment.subject_id}:{enrolment.occurrence}:{step_id}"
    )
    if len(key) <= KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"sop:{enrolment.template_id}:{digest}:{step_id}"


def first_due(bundle: TemplateBundle, index: int, enrolled_at: datetime) -> datetime:
    step = bundle.template.steps[index]
    return step_due(enrolled_at, after=step.after, at=step.at, weekdays=step.weekday)


async def enrol(
    session: AsyncSession,
    services: SopServices,
    bundle: TemplateBundle,
    *,
    corp_id: str,
    subject_type: str,
    subject_id: str,
    occurrence: str = "",
    staff_userid: str = "",
    context: dict[str, Any] | None = None,
    at: datetime,
) -> bool:
    """Enrol a subject (idempotent per occurrence) and run the steps already due; False if enrolled before."""
    conn = await session.connection()
    dialect = conn.dialect.name
    template = bundle.template
    await conn.execute(
        statements.insert_version(dialect),
        {
            "template_id": bundle.id,
            "version": bundle.version,
            "name": template.name,
            "kind": template.kind,
            "spec": bundle.snapshot(),
            "created_at": utcnow(),
        },
    )
    due = first_due(bundle, 0, at)
    values = {
        "corp_id": corp_id,
        "template_id": bundle.id,
        "version": bundle.version,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "occurrence": occurrence,
        "staff_userid": staff_userid,
        "priority": template.priority,
        "status": EnrolmentStatus.ACTIVE.value,
        "next_step": 0,
        "next_due_at": due,
        "context": context or {},
        "enrolled_at": at,
        "updated_at": utcnow(),
    }
    new_id = (await conn.execute(statements.insert_enrolment(dialect), values)).scalar()
    if new_id is None:
        return False
    if due <= at:
        enrolment = await session.get(SopEnrolment, new_id)
        assert enrolment is not None
        await advance(session, services, enrolment, at)
    return True


def _wait_for(enrolment: SopEnrolment, due: datetime) -> None:
    enrolment.next_due_at = due
    enrolment.updated_at = utcnow()


def _finish(enrolment: SopEnrolment, status: EnrolmentStatus, reason: str, now: datetime) -> None:
    enrolment.status = status.value
    enrolment.end_reason = reason
    enrolment.ended_at = now
    enrolment.next_due_at = None
    enrolment.step_due_since = None
    enrolment.updated_at = utcnow()


async def _facts(session: AsyncSession, enrolment: SopEnrolment) -> ContactFacts | GroupFacts | None:
    if enrolment.subject_type == "group":
        return await load_group(session, enrolment.corp_id, enrolment.subject_id)
    return await load_contact(session, enrolment.corp_id, enrolment.subject_id, enrolment.staff_userid)


def subject_variables(facts: ContactFacts | GroupFacts, trigger: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The template variables a step of ``facts``'s enrolment sees (``trigger`` = the enrolment's context);
    also used by ``lianyi sop render`` and the dry run."""
    if isinstance(facts, ContactFacts):
        return build_context(
            contact=facts.variables(),
            staff={"userid": facts.staff_userid, "name": facts.staff_name},
            dealer=facts.dealer,
            trigger=trigger,
            now=now,
            corp_id=facts.corp_id,
        )
    return build_context(
        group=facts.variables(),
        staff={"userid": facts.owner, "name": facts.owner_name},
        dealer=facts.dealer,
        trigger=trigger,
        now=now,
        corp_id=facts.corp_id,
    )


def _variables(facts: ContactFacts | GroupFacts, enrolment: SopEnrolment, now: datetime) -> dict[str, Any]:
    return subject_variables(facts, dict(enrolment.context), now)


async def _record(
    session: AsyncSession,
    enrolment: SopEnrolment,
    key: str,
    step_id: str,
    action: str,
    *,
    outcome: str,
    reason: str = "",
    due_at: datetime | None,
    now: datetime,
    commands: list[str] | None = None,
) -> bool:
    """Claim the step's key; False when it was claimed before (the step already ran)."""
    assert enrolment.id is not None
    conn = await session.connection()
    result = await conn.execute(
        statements.claim_step(conn.dialect.name),
        {
            "corp_id": enrolment.corp_id,
            "enrolment_id": enrolment.id,
            "step_key": key,
            "step_id": step_id,
            "action": action,
            "outcome": outcome,
            "reason": reason,
            "due_at": due_at,
            "ran_at": now,
            "commands": commands,
        },
    )
    return bool(result.rowcount)


async def advance(session: AsyncSession, services: SopServices, enrolment: SopEnrolment, now: datetime) -> None:
    """Run every step of ``enrolment`` that is due at ``now``, then schedule the next one (or finish)."""
    if enrolment.status != EnrolmentStatus.ACTIVE.value:
        return
    catalog = services.catalog()
    retired = catalog.end_reason(enrolment.template_id)
    if retired:
        _finish(enrolment, EnrolmentStatus.CANCELLED, retired, now)
        return
    bundle = await services.bundle(session, enrolment.template_id, enrolment.version)
    if bundle is None:
        log.error("SOP version missing; enrolment cancelled", extra={"enrolment": enrolment.id})
        _finish(enrolment, EnrolmentStatus.CANCELLED, "version_missing", now)
        return
    template = bundle.template
    renderer = services.renderer(bundle)
    steps = template.steps
    first = True
    while enrolment.next_step < len(steps):
        index = enrolment.next_step
        step = steps[index]
        due = first_due(bundle, index, enrolment.enrolled_at)
        if due > now and not first:  # a step just ran and the next one waits: no need to look at the subject
            _wait_for(enrolment, due)
            return
        first = False
        facts = await _facts(session, enrolment)
        if facts is None:
            _finish(enrolment, EnrolmentStatus.CANCELLED, "subject_gone", now)
            return
        exit_reason = (
            contact_exit_reason(template.exit, facts)
            if isinstance(facts, ContactFacts)
            else group_exit_reason(template.exit, facts)
        )
        if exit_reason:
            _finish(enrolment, EnrolmentStatus.EXITED, exit_reason, now)
            return
        if due > now:  # called for an exit check (recheck_exits) before the step is due
            _wait_for(enrolment, due)
            return
        since = enrolment.step_due_since or due
        step_id = template.step_id(index)
        key = step_key(enrolment, step_id)
        variables = _variables(facts, enrolment, now)
        outcome, reason, commands = await _run_step(
            session, services, catalog, enrolment, bundle, renderer, facts, variables, index, key, since, now
        )
        if outcome == "wait":
            return
        claimed = await _record(
            session,
            enrolment,
            key,
            step_id,
            step.action,
            outcome=outcome,
            reason=reason,
            due_at=since,
            now=now,
            commands=commands,
        )
        if not claimed:
            log.warning("SOP step already ran; moving on", extra={"step_key": key})
        enrolment.next_step = index + 1
        enrolment.step_due_since = None
        enrolment.next_due_at = now
        if step.end:
            _finish(enrolment, EnrolmentStatus.COMPLETED, "end_step", now)
            return
    _finish(enrolment, EnrolmentStatus.COMPLETED, "all_steps", now)


async def _run_step(
    session: AsyncSession,
    services: SopServices,
    catalog: Catalog,
    enrolment: SopEnrolment,
    bundle: TemplateBundle,
    renderer: SopRenderer,
    facts: ContactFacts | GroupFacts,
    variables: dict[str, Any],
    index: int,
    key: str,
    since: datetime,
    now: datetime,
) -> tuple[str, str, list[str]]:
    """Decide and perform one due step: ("wait", …) leaves it for later, else the outcome to record."""
    step = bundle.template.steps[index]
    if step.when:
        try:
            if not renderer.evaluate(step.when, variables):
                return "skipped", "when_false", []
        except SopRenderError as exc:
            log.error("SOP step condition failed", extra={"step_key": key, "error": str(exc)})
            return "skipped", "when_error", []
    touches = None
    if step.kind in TOUCH_KINDS:
        recipient = ("group", facts.chat_id) if isinstance(facts, GroupFacts) else ("contact", facts.external_userid)
        touches = await count_touches(session, catalog.policy, enrolment.corp_id, *recipient, now)
    decision = decide(
        catalog.policy,
        kind=step.kind,
        at=now,
        due_since=since,
        touches_today=touches.today if touches else 0,
        touches_week=touches.week if touches else 0,
        quota_used=touches.quota_used if touches and step.kind in ("private_message", "group_message") else None,
    )
    if decision.verdict == "wait":
        assert decision.not_before is not None
        enrolment.next_due_at = decision.not_before
        enrolment.step_due_since = since
        enrolment.updated_at = utcnow()
        return "wait", decision.reason, []
    if decision.verdict == "skip":
        return "skipped", decision.reason, []

    async def start(target: TemplateBundle) -> None:
        await enrol(
            session,
            services,
            target,
            corp_id=enrolment.corp_id,
            subject_type=enrolment.subject_type,
            subject_id=enrolment.subject_id,
            occurrence=f"from:{bundle.id}",
            staff_userid=enrolment.staff_userid,
            context={"event": "start_sop", "from": bundle.id},
            at=now,
        )

    run = actions.StepRun(
        session=session,
        services=services,
        start=start,
        enrolment=enrolment,
        bundle=bundle,
        step=step,
        step_key=key,
        facts=facts,
        variables=variables,
        renderer=renderer,
        now=now,
    )
    try:
        await actions.ACTIONS[step.action](run)
    except actions.StepSkipped as skipped:
        return "skipped", skipped.reason, []
    except SopRenderError as exc:
        log.error("SOP message failed to render; step skipped", extra={"step_key": key, "error": str(exc)})
        return "skipped", "render_error", []
    return ("sent" if run.commands else "done"), "", run.commands
