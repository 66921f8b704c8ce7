"""The dry run's simulation: enrolments stepped in time order through the engine's rules (``when``, the
contact policy's :func:`~scrm.contact_policy.decide`, the action's own skips), against a touch ledger that starts
from the database's (:meth:`Ledger.load`, the one read) and grows with every simulated send. Nothing is
written. A welcome step counts as sent: the add event it stands for would carry a welcome code."""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.audience import ContactFacts, GroupFacts
from scrm.contact_policy import CAPPED_KINDS, QUOTA_KINDS, Policy, decide
from scrm.models import ContactTouch
from scrm.sop.dryrun_report import Conflict, DryRunReport, Entry, PlannedStep
from scrm.sop.engine import TOUCH_KINDS, subject_variables
from scrm.sop.render import SopRenderer, SopRenderError
from scrm.sop.spec import TemplateBundle
from scrm.timing import CHINA_TZ, step_due

Facts = ContactFacts | GroupFacts
LIMIT_REASONS = frozenset({"cap_day", "cap_week", "quota", "defer_expired"})
# what each action writes to the touch ledger: (counts towards caps, counts towards the group-send quota)
LEDGER_FLAGS: dict[str, tuple[bool, bool]] = {
    "welcome": (False, False),
    "private_message": (True, True),
    "advisor_task": (True, False),
    "group_message": (False, True),
}


def identity(facts: Facts) -> tuple[str, str, str]:
    """(subject type, subject id, display name)."""
    if isinstance(facts, ContactFacts):
        return "contact", facts.external_userid, facts.remark or facts.name
    return "group", facts.chat_id, facts.name


def trigger_context(bundle: TemplateBundle, facts: Facts) -> dict[str, Any]:
    """The trigger facts an enrolment of ``facts`` would carry (the ``trigger`` variable)."""
    trigger = bundle.template.trigger
    context: dict[str, Any] = {"event": trigger.name}
    if trigger.event == "contact.tagged":
        context["tag"] = next((t for t in trigger.tags if isinstance(facts, ContactFacts) and t in facts.tags), "")
    elif trigger.event in ("contact.stage_changed", "lead.lost") and isinstance(facts, ContactFacts):
        context["stage"] = facts.stage
    elif trigger.event == "contact.intent_level" and isinstance(facts, ContactFacts):
        context["level"] = facts.intent_level
    elif trigger.event == "contact.silent":
        context["days"] = trigger.days or 0
    elif trigger.event == "message.keyword":
        keyword = trigger.keywords[0] if trigger.keywords else ""
        context.update(text=keyword, keyword=keyword)
    return context


# ---- the touch ledger -------------------------------------------------------------------------------------


class Ledger:
    """Touches per recipient: the database's, then the simulated ones, counted like :mod:`scrm.touches`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.touches: dict[tuple[str, str], list[tuple[datetime, bool, bool]]] = defaultdict(list)

    async def load(self, session: AsyncSession, corp_id: str, since: datetime) -> None:
        t = ContactTouch.__table__.c  # type: ignore[attr-defined]
        conn = await session.connection()
        rows = await conn.execute(
            select(t.recipient_type, t.recipient_id, t.at, t.counts_cap, t.counts_quota).where(
                t.corp_id == corp_id, t.at >= since
            )
        )
        for recipient_type, recipient_id, at, counts_cap, counts_quota in rows.all():
            self.touches[(recipient_type, recipient_id)].append((at, bool(counts_cap), bool(counts_quota)))

    def add(self, recipient: tuple[str, str], action: str, at: datetime) -> None:
        counts_cap, counts_quota = LEDGER_FLAGS[action]
        self.touches[recipient].append((at, counts_cap, counts_quota))

    def counts(self, recipient: tuple[str, str], at: datetime) -> tuple[int, int, int]:
        """(today, this week, this quota window) as the engine's count_touches gives them."""
        day, week, quota = self.policy.day_window(at), self.policy.week_window(at), self.policy.quota_window(at)
        today = this_week = quota_used = 0
        for when, counts_cap, counts_quota in self.touches.get(recipient, ()):
            today += counts_cap and day[0] <= when < day[1]
            this_week += counts_cap and week[0] <= when < week[1]
            quota_used += counts_quota and quota[0] <= when < quota[1]
        return today, this_week, quota_used

    def limits_reached(self, recipient: tuple[str, str], kind: str, at: datetime) -> list[tuple[str, int, int]]:
        """Every cap or quota ``kind`` has reached at ``at``: (reason, used, limit)."""
        today, week, quota_used = self.counts(recipient, at)
        caps, found = self.policy.caps, []
        if kind in CAPPED_KINDS and caps.per_week and week >= caps.per_week:
            found.append(("cap_week", week, caps.per_week))
        if kind in CAPPED_KINDS and caps.per_day and today >= caps.per_day:
            found.append(("cap_day", today, caps.per_day))
        if kind in QUOTA_KINDS and quota_used >= self.policy.quota_limit(at):
            found.append(("quota", quota_used, self.policy.quota_limit(at)))
        return found


# ---- the simulation ---------------------------------------------------------------------------------------


@dataclass
class Flight:
    """One enrolment moving through its steps."""

    entry: Entry
    facts: Facts
    index: int = 0
    since: datetime | None = None  # when the current step first fell due (the defer limit counts from it)
    deferred: list[str] = field(default_factory=list)


class Simulation:
    def __init__(self, bundle: TemplateBundle, policy: Policy, ledger: Ledger, report: DryRunReport) -> None:
        self.bundle = bundle
        self.policy = policy
        self.ledger = ledger
        self.report = report
        self.renderer = SopRenderer(bundle)
        self.queue: list[tuple[datetime, int, Flight]] = []
        self.seen: set[tuple[str, str, date, str]] = set()  # conflicts reported once per subject, day and limit
        self.order = itertools.count()

    def push(self, at: datetime, flight: Flight) -> None:
        heapq.heappush(self.queue, (at, next(self.order), flight))

    def run(self) -> None:
        steps = self.bundle.template.steps
        while self.queue:
            now, _, flight = heapq.heappop(self.queue)
            step = steps[flight.index]
            due = step_due(flight.entry.enrolled_at, after=step.after, at=step.at, weekdays=step.weekday)
            if due > now:
                now = due
            if now >= self.report.end:
                self.report.later += len(steps) - flight.index
                continue
            outcome, reason = self.attempt(flight, due, now)
            if outcome == "wait":
                continue
            subject_type, subject_id, _ = identity(flight.facts)
            step_id = self.bundle.template.step_id(flight.index)
            self.report.steps.append(
                PlannedStep(
                    subject_type,
                    subject_id,
                    step_id,
                    step.action,
                    flight.since or due,
                    now,
                    outcome,
                    reason,
                    tuple(flight.deferred),
                )
            )
            flight.index, flight.since, flight.deferred = flight.index + 1, None, []
            if flight.index < len(steps) and not step.end:
                self.push(now, flight)

    def attempt(self, flight: Flight, due: datetime, now: datetime) -> tuple[str, str]:
        """What the engine would do with the flight's current step at ``now``: wait (re-queued), or the outcome."""
        step = self.bundle.template.steps[flight.index]
        facts = flight.facts
        since = flight.since or due
        variables = subject_variables(facts, trigger_context(self.bundle, facts), now)
        if step.when:
            try:
                if not self.renderer.evaluate(step.when, variables):
                    return "skipped", "when_false"
            except SopRenderError:
                return "skipped", "when_error"
        recipient = identity(facts)[:2]
        today, week, quota_used = self.ledger.counts(recipient, now)
        decision = decide(
            self.policy,
            kind=step.kind,
            at=now,
            due_since=since,
            touches_today=today if step.kind in TOUCH_KINDS else 0,
            touches_week=week if step.kind in TOUCH_KINDS else 0,
            quota_used=quota_used if step.kind in ("private_message", "group_message") else None,
        )
        if decision.reason in LIMIT_REASONS:
            self.conflicts(flight, step.kind, decision.reason, since, now)
        if decision.verdict == "wait":
            assert decision.not_before is not None
            flight.since = since
            flight.deferred.append(decision.reason)
            self.push(decision.not_before, flight)
            return "wait", decision.reason
        if decision.verdict == "skip":
            return "skipped", decision.reason
        return self.perform(flight, now, variables)

    def perform(self, flight: Flight, now: datetime, variables: dict[str, Any]) -> tuple[str, str]:
        step = self.bundle.template.steps[flight.index]
        facts = flight.facts
        if isinstance(facts, ContactFacts) and step.action in ("private_message", "advisor_task"):
            live = facts.relation_live and facts.staff_userid
            if not live:
                return "skipped", "no_relation"
        if isinstance(facts, GroupFacts) and step.action == "group_message" and not (facts.active and facts.owner):
            return "skipped", "group_inactive"
        if step.message is not None:
            channel = facts.channel if isinstance(facts, ContactFacts) else ""
            try:
                self.renderer.render(step.message, variables, channel=channel)
            except SopRenderError:
                return "skipped", "render_error"
        if step.action in LEDGER_FLAGS:
            self.ledger.add(identity(facts)[:2], step.action, now)
            return "sent", "ok"
        return "done", "ok"

    def conflicts(self, flight: Flight, kind: str, reason: str, since: datetime, now: datetime) -> None:
        """Record the caps and quotas reached at ``now`` (and a send given up), once per subject, day and limit."""
        subject_type, subject_id, _ = identity(flight.facts)
        step_id = self.bundle.template.step_id(flight.index)
        day = now.astimezone(CHINA_TZ).date()
        reached = self.ledger.limits_reached((subject_type, subject_id), kind, now)
        if reason == "defer_expired":
            reached.append(("defer_expired", (now - since).days, self.policy.max_defer_days))
        for limit, used, most in reached:
            key = (subject_type, subject_id, day, limit)
            if key not in self.seen:
                self.seen.add(key)
                self.report.conflicts.append(Conflict(subject_type, subject_id, day, limit, step_id, used, most))
