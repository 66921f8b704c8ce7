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

Everything commits together, with the campaign's next run time: a crash anywhere during planning leaves
nothing behind, and the next tick plans the run again from scratch.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.campaigns.audience import Target, expand
from scrm.campaigns.content import CampaignRenderError, ContentRenderer, RenderedContent
from scrm.campaigns.spec import CampaignSpec
from scrm.commands import CommandKind, enqueue
from scrm.contact_policy import Policy, decide
from scrm.db_insert import insert_ignoring_conflict
from scrm.links import LinkWrapper
from scrm.models import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignRun,
    CampaignTarget,
    RunStatus,
    Staff,
    TargetStatus,
)
from scrm.templating.context import build_context
from scrm.touches import TouchCounts, count_touches_many, record_touches

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
    kind = "group_message" if spec.chat_type == "group" else "private_message"
    recipient_type = "group" if spec.chat_type == "group" else "contact"
    counts = await count_touches_many(
        session, policy, campaign.corp_id, recipient_type, [t.target_id for t in targets], now
    )
    senders = {s.userid: s for s in (await session.exec(_staff_query(campaign.corp_id))).all()}
    renderer = ContentRenderer(spec.content, links=links, corp_id=campaign.corp_id)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    contents: dict[str, RenderedContent] = {}
    campaign_vars = {"code": spec.code, "name": spec.name}
    # A run sends now or never: a target over a limit is skipped with that limit's reason, not deferred (and
    # not "defer_expired" because the quota window ends more than max_defer_days away).
    at_send_time = policy.model_copy(update={"on_limit": "skip"})
    for target in targets:
        reason = _sender_problem(target, senders)
        if reason is None:
            touches = counts.get(target.target_id, NO_TOUCHES)
            decision = decide(
                at_send_time,
                kind=kind,
                at=now,
                due_since=now,
                touches_today=touches.today,
                touches_week=touches.week,
                quota_used=touches.quota_used,
            )
            reason = None if decision.verdict == "send" else decision.reason
        if reason is None:
            try:
                context = build_context(now=now, corp_id=campaign.corp_id, **target.context)
                rendered = renderer.render({**context, "campaign": campaign_vars})
            except CampaignRenderError as exc:
                log.warning(
                    "campaign content failed to render for a target; skipped",
                    extra={"campaign": spec.code, "target": target.target_id, "error": str(exc)},
                )
                reason = "render_error"
        if reason is not None:
            plan.skipped[target.target_id] = reason
            continue
        contents.setdefault(rendered.fingerprint, rendered)
        groups[(target.sender, rendered.fingerprint)].append(target.target_id)
    start = max(now, campaign.next_run_at or now)
    source = link_source(spec.code, slot)
    for sender, fingerprint in sorted(groups):
        for recipients in chunk(groups[(sender, fingerprint)], batch_limit(spec.chat_type)):
            number = len(plan.batches)
            content = contents[fingerprint]
            sent = RenderedContent(content.text, renderer.tracked(content.attachments, source), fingerprint)
            plan.batches.append(
                PlannedBatch(
                    batch_no=number,
                    key=batch_key(campaign.id, slot, number),
                    sender=sender,
                    fingerprint=fingerprint,
                    recipients=recipients,
                    content=sent,
                    not_before=policy.next_allowed(paced(start, number, calls_per_minute)),
                )
            )
            plan.batch_of.update(dict.fromkeys(recipients, number))
    return plan


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


async def plan_run(
    session: AsyncSession,
    campaign: Campaign,
    spec: CampaignSpec,
    *,
    slot: str,
    fire_at: datetime,
    now: datetime,
    policy: Policy,
    calls_per_minute: int,
    links: LinkWrapper | None = None,
) -> CampaignRun | None:
    """Plan and write the run ``slot`` in the caller's transaction; None when it was planned before."""
    assert campaign.id is not None
    inserted = await insert_ignoring_conflict(
        session,
        CampaignRun.__table__,  # type: ignore[attr-defined]
        {
            "campaign_id": campaign.id,
            "corp_id": campaign.corp_id,
            "slot": slot,
            "fire_at": fire_at,
            "status": RunStatus.SENDING.value,
            "targets": 0,
            "skipped": 0,
            "batches": 0,
            "note": "",
            "planned_at": now,
        },
        ("campaign_id", "slot"),
    )
    if not inserted:
        return None
    run = (
        await session.exec(select(CampaignRun).where(CampaignRun.campaign_id == campaign.id, CampaignRun.slot == slot))
    ).one()
    assert run.id is not None
    plan = await build_plan(
        session, campaign, spec, slot=slot, now=now, policy=policy, calls_per_minute=calls_per_minute, links=links
    )
    await _write(session, campaign, spec, run, plan, now)
    await session.refresh(run)
    return run


async def _write(
    session: AsyncSession, campaign: Campaign, spec: CampaignSpec, run: CampaignRun, plan: Plan, now: datetime
) -> None:
    assert run.id is not None and campaign.id is not None
    conn = await session.connection()
    target_type = "group" if spec.chat_type == "group" else "contact"
    rows = [
        {
            "run_id": run.id,
            "corp_id": campaign.corp_id,
            "target_type": target_type,
            "target_id": t.target_id,
            "name": t.name[:128],
            "sender": t.sender,
            "batch_no": plan.batch_of.get(t.target_id),
            "status": TargetStatus.SKIPPED.value if t.target_id in plan.skipped else TargetStatus.PLANNED.value,
            "reason": plan.skipped.get(t.target_id, ""),
            "updated_at": now,
        }
        for t in plan.targets
    ]
    if rows:
        await conn.execute(insert(CampaignTarget.__table__), rows)  # type: ignore[attr-defined]
    recipient_key = "chat_id_list" if spec.chat_type == "group" else "external_userid"
    batch_rows: list[dict[str, Any]] = []
    for batch in plan.batches:
        payload: dict[str, Any] = {
            "chat_type": spec.chat_type,
            "sender": batch.sender,
            recipient_key: batch.recipients,
            "attachments": batch.content.attachments,
            "source": "campaign",
            "ref": batch.key,
        }
        if batch.content.text:
            payload["text"] = {"content": batch.content.text}
        await enqueue(
            session,
            corp_id=campaign.corp_id,
            kind=CommandKind.ADD_MSG_TEMPLATE,
            key=batch.key,
            payload=payload,
            not_before=batch.not_before,
        )
        batch_rows.append(
            {
                "run_id": run.id,
                "campaign_id": campaign.id,
                "corp_id": campaign.corp_id,
                "batch_no": batch.batch_no,
                "key": batch.key,
                "sender": batch.sender,
                "chat_type": spec.chat_type,
                "fingerprint": batch.fingerprint,
                "target_count": len(batch.recipients),
                "status": BatchStatus.QUEUED.value,
                "msgid": "",
                "fail_count": 0,
                "recovered": False,
                "results_final": False,
                "reminders": [],
                "error": "",
                "created_at": now,
                "updated_at": now,
            }
        )
    if batch_rows:
        await conn.execute(insert(CampaignBatch.__table__), batch_rows)  # type: ignore[attr-defined]
    kind = "group_message" if spec.chat_type == "group" else "private_message"
    await record_touches(
        session,
        [
            {
                "corp_id": campaign.corp_id,
                "recipient_type": target_type,
                "recipient_id": target_id,
                "kind": kind,
                "source": "campaign",
                "counts_cap": spec.chat_type == "single",
                "counts_quota": True,
                "ref": f"campaign:{run.id}:{target_id}",
                "at": now,
            }
            for target_id in plan.batch_of
        ],
    )
    status = RunStatus.SENDING if plan.batches else RunStatus.SKIPPED
    await session.exec(
        update(CampaignRun)
        .where(CampaignRun.id == run.id)  # type: ignore[arg-type]
        .values(
            status=status.value,
            targets=len(plan.targets),
            skipped=len(plan.skipped),
            batches=len(plan.batches),
            note="" if plan.batches else ("没有可发送的目标" if not plan.targets else "所有目标都被跳过"),
            finished_at=None if plan.batches else now,
        )
    )
    log.info(
        "campaign run planned",
        extra={
            "campaign": spec.code,
            "slot": run.slot,
            "targets": len(plan.targets),
            "skipped": dict(plan.skip_reasons),
            "batches": len(plan.batches),
        },
    )
