"""Writing one planned campaign run: the run row (unique per campaign and slot), its targets, one
ADD_MSG_TEMPLATE outbox command and one campaign_batches row per batch, the touches and the run's totals — all in
the caller's transaction (the planning itself is :mod:`scrm.campaigns.planner`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.campaigns.planner import Plan, PlannedBatch, build_plan
from scrm.campaigns.spec import CampaignSpec
from scrm.commands import CommandKind, enqueue
from scrm.contact_policy import Policy
from scrm.db_insert import insert_ignoring_conflict
from scrm.links import LinkWrapper
from scrm.models import BatchStatus, Campaign, CampaignBatch, CampaignRun, CampaignTarget, RunStatus, TargetStatus
from scrm.touches import record_touches

log = logging.getLogger(__name__)


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
    """The run's targets, batches with their outbox commands, touches and totals, in the caller's transaction."""
    assert run.id is not None and campaign.id is not None
    conn = await session.connection()
    rows = _target_rows(campaign, spec, run.id, plan, now)
    if rows:
        await conn.execute(insert(CampaignTarget.__table__), rows)  # type: ignore[attr-defined]
    batch_rows = [await _enqueue_batch(session, campaign, spec, run.id, batch, now) for batch in plan.batches]
    if batch_rows:
        await conn.execute(insert(CampaignBatch.__table__), batch_rows)  # type: ignore[attr-defined]
    await _record_run_touches(session, campaign, spec, run.id, plan, now)
    await _finish_run(session, run.id, plan, now)
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


def _target_type(spec: CampaignSpec) -> str:
    return "group" if spec.chat_type == "group" else "contact"


def _target_rows(
    campaign: Campaign, spec: CampaignSpec, run_id: int, plan: Plan, now: datetime
) -> list[dict[str, Any]]:
    """One campaign_targets row per target: planned (with its batch) or skipped (with the reason)."""
    return [
        {
            "run_id": run_id,
            "corp_id": campaign.corp_id,
            "target_type": _target_type(spec),
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


async def _enqueue_batch(
    session: AsyncSession, campaign: Campaign, spec: CampaignSpec, run_id: int, batch: PlannedBatch, now: datetime
) -> dict[str, Any]:
    """Append the batch's ADD_MSG_TEMPLATE command (keyed by the batch key); returns its campaign_batches row."""
    recipient_key = "chat_id_list" if spec.chat_type == "group" else "external_userid"
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
    return {
        "run_id": run_id,
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


async def _record_run_touches(
    session: AsyncSession, campaign: Campaign, spec: CampaignSpec, run_id: int, plan: Plan, now: datetime
) -> None:
    """A touch per planned target in the shared ledger (quota always, the per-contact caps for 1v1)."""
    kind = "group_message" if spec.chat_type == "group" else "private_message"
    await record_touches(
        session,
        [
            {
                "corp_id": campaign.corp_id,
                "recipient_type": _target_type(spec),
                "recipient_id": target_id,
                "kind": kind,
                "source": "campaign",
                "counts_cap": spec.chat_type == "single",
                "counts_quota": True,
                "ref": f"campaign:{run_id}:{target_id}",
                "at": now,
            }
            for target_id in plan.batch_of
        ],
    )


async def _finish_run(session: AsyncSession, run_id: int, plan: Plan, now: datetime) -> None:
    """The run's totals; a run with nothing to send is skipped (and finished) at once."""
    status = RunStatus.SENDING if plan.batches else RunStatus.SKIPPED
    await session.exec(
        update(CampaignRun)
        .where(CampaignRun.id == run_id)  # type: ignore[arg-type]
        .values(
            status=status.value,
            targets=len(plan.targets),
            skipped=len(plan.skipped),
            batches=len(plan.batches),
            note="" if plan.batches else ("没有可发送的目标" if not plan.targets else "所有目标都被跳过"),
            finished_at=None if plan.batches else now,
        )
    )
