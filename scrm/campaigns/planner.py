"""Planning one campaign run: audience → targets → policy → batches → outbox commands, in one transaction.

1. The run row is inserted first (unique per campaign and slot): a run that exists was planned already, and a
   second leader planning the same slot at the same moment waits on that key and then finds it.
2. The audience is expanded from the local mirror *now* (not when the campaign was written).
3. Each target is checked against the contact policy with the shared touch ledger: WeCom's group-send quota
   (groups and 1v1), and for 1v1 the per-contact daily/weekly caps. A target over its limit is skipped with
   the reason (``quota``, ``cap_day``, ``cap_week``); so are targets nobody can send (``no_sender``,
   ``sender_inactive``) and targets whose content fails to render (``render_error``).
4. Targets are grouped by sender and rendered content, then cut into batches of at most 2,000 chat ids or
   10,000 external userids (one ``add_msg_template`` call each), numbered in a deterministic order.
5. Each batch becomes one ADD_MSG_TEMPLATE outbox command whose idempotency key is the batch key, paced
   with ``not_before`` so that no more than ``calls_per_minute`` become due in any minute (the client's rate
   limiter still guards every call); a batch whose paced time falls in quiet hours waits for their end.
   Touches are recorded for every planned target.

:func:`build_plan` does steps 2–4 and reads only (``lianyi campaign plan`` shows its result);
:func:`scrm.campaigns.run_writer.plan_run` does steps 1 and 5. Everything commits together, with the campaign's
next run time: a crash anywhere during planning leaves
nothing behind, and the next tick plans the run again from scratch.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.campaigns.audience import Target, expand
from scrm.campaigns.content import CampaignRenderError, ContentRenderer, RenderedContent
from scrm.campaigns.spec import CampaignSpec
from scrm.contact_policy import Policy, decide
from scrm.links import LinkWrapper
from scrm.models import (
    Campaign,
    Staff,
)
from scrm.templating.context import build_context
from scrm.touches import TouchCounts, count_touches_many

log = logging.getLogger(__name__)

MAX_CHAT_IDS = 2_000  # add_msg_template chat_id_list
MAX_EXTERNAL_USERIDS = 10_000  # add_msg_template external_userid
NO_TOUCHES = TouchCounts(0, 0, 0)
# a minute plus the one second of slack the WeCom client's per-API window has (bot.wecom.client.API_WINDOW_SLACK):
# a batch paced into the next window finds it open instead of waiting in the limiter
PACING_WINDOW = timedelta(seconds=61)


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    batch_no: int
    key: str
    sender: str
    fingerprint: str
    recipients: list[str]
    content: RenderedContent
    not_before: datetime


@dataclass(slots=True)
class Plan:
    """What a run will send; :func:`build_plan` makes it without writing anything (``campaign plan``)."""

    targets: list[Target]
    batches: list[PlannedBatch] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # target_id → reason
    batch_of: dict[str, int] = field(default_factory=dict)  # target_id → batch_no

    @property
    def skip_reasons(self) -> Counter[str]:
        return Counter(self.skipped.values())


def batch_limit(chat_type: str) -> int:
    return MAX_CHAT_IDS if chat_type == "group" else MAX_EXTERNAL_USERIDS


def chunk(recipients: list[str], limit: int) -> list[list[str]]:
    """``recipients`` cut into consecutive lists of at most ``limit``."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return [recipients[i : i + limit] for i in range(0, len(recipients), limit)]


def batch_key(campaign_id: int, slot: str, batch_no: int) -> str:
    return f"campaign:{campaign_id}:{slot}:{batch_no}"


def link_source(code: str, slot: str) -> str:
    return f"campaign:{code}:{slot}"


def paced(start: datetime, index: int, calls_per_minute: int) -> datetime:
    """When batch ``index`` may be sent: windows of ``calls_per_minute`` calls each, :data:`PACING_WINDOW` apart."""
    return start + PACING_WINDOW * (index // max(1, calls_per_minute))


async def build_plan(
    session: AsyncSession,
    campaign: Campaign,
    spec: CampaignSpec,
    *,
    slot: str,
    now: datetime,
    policy: Policy,
    calls_per_minute: int,
    links: LinkWrapper | None = None,
) -> Plan:
    """Expand, check and batch the audience of one run (reads only)."""
    assert campaign.id is not None
    targets = await expand(session, campaign.corp_id, spec.chat_type, spec.audience)
    plan = Plan(targets)
    recipient_type = "group" if spec.chat_type == "group" else "contact"
    counts = await count_touches_many(
        session, policy, campaign.corp_id, recipient_type, [t.target_id for t in targets], now
    )
    senders = {s.userid: s for s in (await session.exec(_staff_query(campaign.corp_id))).all()}
    renderer = ContentRenderer(spec.content, links=links, corp_id=campaign.corp_id)
    # A run sends now or never: a target over a limit is skipped with that limit's reason, not deferred (and
    # not "defer_expired" because the quota window ends more than max_defer_days away).
    at_send_time = policy.model_copy(update={"on_limit": "skip"})
    check = _TargetCheck(campaign.corp_id, spec, at_send_time, now, counts, senders, renderer)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    contents: dict[str, RenderedContent] = {}
    for target in targets:
        outcome = check.outcome(target)
        if isinstance(outcome, str):
            plan.skipped[target.target_id] = outcome
            continue
        contents.setdefault(outcome.fingerprint, outcome)
        groups[(target.sender, outcome.fingerprint)].append(target.target_id)
    start = max(now, campaign.next_run_at or now)
    _cut_batches(plan, campaign.id, spec, slot, groups, contents, renderer, policy, start, calls_per_minute)
    return plan


@dataclass(slots=True)
class _TargetCheck:
    """Whether one target can be sent now (sender, policy) and its rendered content, or why it is skipped."""

    corp_id: str
    spec: CampaignSpec
    policy: Policy  # with on_limit "skip"
    now: datetime
    counts: dict[str, TouchCounts]
    senders: dict[str, Staff]
    renderer: ContentRenderer

    def outcome(self, target: Target) -> RenderedContent | str:
        """The rendered content, or the skip reason."""
        reason = _sender_problem(target, self.senders) or self._policy_problem(target)
        if reason is not None:
            return reason
        try:
            context = build_context(now=self.now, corp_id=self.corp_id, **target.context)
            return self.renderer.render({**context, "campaign": {"code": self.spec.code, "name": self.spec.name}})
        except CampaignRenderError as exc:
            log.warning(
                "campaign content failed to render for a target; skipped",
                extra={"campaign": self.spec.code, "target": target.target_id, "error": str(exc)},
            )
            return "render_error"

    def _policy_problem(self, target: Target) -> str | None:
        touches = self.counts.get(target.target_id, NO_TOUCHES)
        decision = decide(
            self.policy,
            kind="group_message" if self.spec.chat_type == "group" else "private_message",
            at=self.now,
            due_since=self.now,
            touches_today=touches.today,
            touches_week=touches.week,
            quota_used=touches.quota_used,
        )
        return None if decision.verdict == "send" else decision.reason


def _cut_batches(
    plan: Plan,
    campaign_id: int,
    spec: CampaignSpec,
    slot: str,
    groups: dict[tuple[str, str], list[str]],
    contents: dict[str, RenderedContent],
    renderer: ContentRenderer,
    policy: Policy,
    start: datetime,
    calls_per_minute: int,
) -> None:
    """Targets grouped by (sender, content) cut into numbered, paced batches of at most the call's limit."""
    source = link_source(spec.code, slot)
    for sender, fingerprint in sorted(groups):
        for recipients in chunk(groups[(sender, fingerprint)], batch_limit(spec.chat_type)):
            number = len(plan.batches)
            content = contents[fingerprint]
            sent = RenderedContent(content.text, renderer.tracked(content.attachments, source), fingerprint)
            plan.batches.append(
                PlannedBatch(
                    batch_no=number,
                    key=batch_key(campaign_id, slot, number),
                    sender=sender,
                    fingerprint=fingerprint,
                    recipients=recipients,
                    content=sent,
                    not_before=policy.next_allowed(paced(start, number, calls_per_minute)),
                )
            )
            plan.batch_of.update(dict.fromkeys(recipients, number))


def _staff_query(corp_id: str) -> Any:
    """Every staff member of the corp (one query; an IN list of thousands of senders would hit bind limits)."""
    return select(Staff).where(Staff.corp_id == corp_id)


def _sender_problem(target: Target, senders: dict[str, Staff]) -> str | None:
    if not target.sender:
        return "no_sender"
    member = senders.get(target.sender)
    if member is not None and (not member.active or not member.has_contact_permission):
        return "sender_inactive"
    return None
