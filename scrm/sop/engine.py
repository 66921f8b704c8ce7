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
from dataclasses import dataclass
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
from scrm.sop.render import SopRenderError
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
    bundle = await _running_bundle(session, services, catalog, enrolment, now)
    if bundle is None:
        return
    steps = bundle.template.steps
    first = True
    while enrolment.next_step < len(steps):
        index = enrolment.next_step
        due = first_due(bundle, index, enrolment.enrolled_at)
        if due > now and not first:  # a step just ran and the next one waits: no need to look at the subject
            _wait_for(enrolment, due)
            return
        first = False
        facts = await _current_facts(session, bundle, enrolment, now)
        if facts is None:
            return
        if due > now:  # called for an exit check (recheck_exits) before the step is due
            _wait_for(enrolment, due)
            return
        call = _StepCall(session, services, catalog, bundle, enrolment, facts, now)
        if not await call.run_and_record(index, due):
            return
        if steps[index].end:
            _finish(enrolment, EnrolmentStatus.COMPLETED, "end_step", now)
            return
    _finish(enrolment, EnrolmentStatus.COMPLETED, "all_steps", now)


async def _running_bundle(
    session: AsyncSession, services: SopServices, catalog: Catalog, enrolment: SopEnrolment, now: datetime
) -> TemplateBundle | None:
    """The bundle the enrolment runs on, or None after ending it (template retired, version lost)."""
    retired = catalog.end_reason(enrolment.template_id)
    if retired:
        _finish(enrolment, EnrolmentStatus.CANCELLED, retired, now)
        return None
    bundle = await services.bundle(session, enrolment.template_id, enrolment.version)
    if bundle is None:
        log.error("SOP version missing; enrolment cancelled", extra={"enrolment": enrolment.id})
        _finish(enrolment, EnrolmentStatus.CANCELLED, "version_missing", now)
    return bundle


async def _current_facts(
    session: AsyncSession, bundle: TemplateBundle, enrolment: SopEnrolment, now: datetime
) -> ContactFacts | GroupFacts | None:
    """What is known of the subject now, or None after ending the enrolment (subject gone, exit rule holds)."""
    facts = await _facts(session, enrolment)
    if facts is None:
        _finish(enrolment, EnrolmentStatus.CANCELLED, "subject_gone", now)
        return None
    rule = bundle.template.exit
    reason = contact_exit_reason(rule, facts) if isinstance(facts, ContactFacts) else group_exit_reason(rule, facts)
    if reason:
        _finish(enrolment, EnrolmentStatus.EXITED, reason, now)
        return None
    return facts


@dataclass
class _StepCall:
    """One due step of one enrolment: the policy's verdict, then the action."""

    session: AsyncSession
    services: SopServices
    catalog: Catalog  # read once per advance, so every step of it sees the same policy
    bundle: TemplateBundle
    enrolment: SopEnrolment
    facts: ContactFacts | GroupFacts
    now: datetime
    key: str = ""
    since: datetime | None = None

    async def run_and_record(self, index: int, due: datetime) -> bool:
        """Run the due step ``index`` and record its outcome under its key; False when it must wait."""
        enrolment = self.enrolment
        self.since = since = enrolment.step_due_since or due
        step = self.bundle.template.steps[index]
        step_id = self.bundle.template.step_id(index)
        self.key = key = step_key(enrolment, step_id)
        outcome, reason, commands = await self.step(index)
        if outcome == "wait":
            return False
        claimed = await _record(
            self.session,
            enrolment,
            key,
            step_id,
            step.action,
            outcome=outcome,
            reason=reason,
            due_at=since,
            now=self.now,
            commands=commands,
        )
        if not claimed:
            log.warning("SOP step already ran; moving on", extra={"step_key": key})
        enrolment.next_step = index + 1
        enrolment.step_due_since = None
        enrolment.next_due_at = self.now
        return True

    async def step(self, index: int) -> tuple[str, str, list[str]]:
        """("wait", …) leaves the step for later, else the outcome to record: (outcome, reason, command keys)."""
        step = self.bundle.template.steps[index]
        renderer = self.services.renderer(self.bundle)
        variables = _variables(self.facts, self.enrolment, self.now)
        if step.when:
            try:
                if not renderer.evaluate(step.when, variables):
                    return "skipped", "when_false", []
            except SopRenderError as exc:
                log.error("SOP step condition failed", extra={"step_key": self.key, "error": str(exc)})
                return "skipped", "when_error", []
        held = await self._held_by_policy(step.kind)
        if held is not None:
            return held
        run = actions.StepRun(
            session=self.session,
            services=self.services,
            start=self.start,
            enrolment=self.enrolment,
            bundle=self.bundle,
            step=step,
            step_key=self.key,
            facts=self.facts,
            variables=variables,
            renderer=renderer,
            now=self.now,
        )
        try:
            await actions.ACTIONS[step.action](run)
        except actions.StepSkipped as skipped:
            return "skipped", skipped.reason, []
        except SopRenderError as exc:
            log.error("SOP message failed to render; step skipped", extra={"step_key": self.key, "error": str(exc)})
            return "skipped", "render_error", []
        return ("sent" if run.commands else "done"), "", run.commands

    async def _held_by_policy(self, kind: str) -> tuple[str, str, list[str]] | None:
        """The contact policy's verdict: a wait (the enrolment is rescheduled) or a skip; None lets it run."""
        touches, facts, policy = None, self.facts, self.catalog.policy
        if kind in TOUCH_KINDS:
            recipient = (
                ("group", facts.chat_id) if isinstance(facts, GroupFacts) else ("contact", facts.external_userid)
            )
            touches = await count_touches(self.session, policy, self.enrolment.corp_id, *recipient, self.now)
        assert self.since is not None  # set by run_and_record
        decision = decide(
            policy,
            kind=kind,
            at=self.now,
            due_since=self.since,
            touches_today=touches.today if touches else 0,
            touches_week=touches.week if touches else 0,
            quota_used=touches.quota_used if touches and kind in ("private_message", "group_message") else None,
        )
        if decision.verdict == "wait":
            assert decision.not_before is not None
            self.enrolment.next_due_at = decision.not_before
            self.enrolment.step_due_since = self.since
            self.enrolment.updated_at = utcnow()
            return "wait", decision.reason, []
        if decision.verdict == "skip":
            return "skipped", decision.reason, []
        return None

    async def start(self, target: TemplateBundle) -> None:
        """``start_sop``: enrol the same subject into ``target`` now."""
        enrolment = self.enrolment
        await enrol(
            self.session,
            self.services,
            target,
            corp_id=enrolment.corp_id,
            subject_type=enrolment.subject_type,
            subject_id=enrolment.subject_id,
            occurrence=f"from:{self.bundle.id}",
            staff_userid=enrolment.staff_userid,
            context={"event": "start_sop", "from": self.bundle.id},
            at=self.now,
        )
