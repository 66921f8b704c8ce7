"""The campaign service API: save a campaign, approve / reject it, cancel it, and run what is due.

Status of a campaign::

    save ──▶ pending_approval ──approve──▶ scheduled ──(each run)──▶ … ──▶ done (one-off) | cancelled
      │             └──reject──▶ rejected (saving a changed file asks for approval again)
      └──(no approval needed)──▶ scheduled

Every change is made by a user (``by``, a username) resolved with :func:`scrm.accounts.actors.require_actor`:
saving and cancelling need ``campaign.edit``, approving and rejecting ``campaign.approve`` (operators and dealer
managers), and nobody approves or rejects a campaign they saved last. Each change is audited with digests of
the campaign row before and after. A run is
due when ``next_run_at`` has passed and the campaign is scheduled; inside the policy's quiet hours it waits
for their end (a run deferred longer than ``max_defer_days`` is recorded as skipped). Planning a run and
moving ``next_run_at`` on commit together (see :mod:`scrm.campaigns.planner`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.accounts.actors import require_actor
from scrm.accounts.permissions import Permission
from scrm.campaigns.content import CampaignRenderError
from scrm.campaigns.run_writer import plan_run
from scrm.campaigns.spec import CampaignSpec, slot_of
from scrm.commands import CommandKind
from scrm.contact_policy import Policy
from scrm.db import SessionFactory, write_transaction
from scrm.db_insert import insert_ignoring_conflict
from scrm.errors import DomainError
from scrm.links import LinkWrapper
from scrm.models import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignRun,
    CampaignStatus,
    CampaignTarget,
    CommandStatus,
    OutboxCommand,
    RunStatus,
    TargetStatus,
)
from scrm.rows import ensure_corp
from scrm.timing import next_cron_fire

log = logging.getLogger(__name__)

STATUS_CN = {
    CampaignStatus.PENDING_APPROVAL.value: "待审批",
    CampaignStatus.REJECTED.value: "已驳回",
    CampaignStatus.SCHEDULED.value: "已排期",
    CampaignStatus.DONE.value: "已完成",
    CampaignStatus.CANCELLED.value: "已取消",
}


class CampaignError(DomainError):
    """A campaign action that cannot be done; the message is Chinese, for operators."""


@dataclass(frozen=True, slots=True)
class Saved:
    campaign: Campaign
    outcome: str  # created | updated | unchanged


async def get_campaign(session: AsyncSession, corp_id: str, code: str) -> Campaign:
    found = (await session.exec(select(Campaign).where(Campaign.corp_id == corp_id, Campaign.code == code))).first()
    if found is None:
        raise CampaignError(f"没有编码为 {code} 的群发活动")
    return found


def spec_of(campaign: Campaign) -> CampaignSpec:
    return CampaignSpec.model_validate(campaign.spec)


async def save_campaign(session: AsyncSession, corp_id: str, spec: CampaignSpec, *, by: str, now: datetime) -> Saved:
    """Create the campaign ``spec.code`` or replace its definition. Saving an identical file changes nothing;
    a changed one needs approval again (when it asks for approval) and counts its schedule from ``now``."""
    await require_actor(session, by, Permission.CAMPAIGN_EDIT)
    await ensure_corp(session, corp_id)
    digest = spec.spec_hash()
    existing = (
        await session.exec(select(Campaign).where(Campaign.corp_id == corp_id, Campaign.code == spec.code))
    ).first()
    if existing is not None and existing.spec_hash == digest:
        return Saved(existing, "unchanged")
    if existing is not None:
        if existing.status == CampaignStatus.CANCELLED.value:
            raise CampaignError(f"群发活动 {spec.code} 已取消，不能再修改；请换一个编码")
        if existing.status == CampaignStatus.DONE.value:
            raise CampaignError(f"群发活动 {spec.code} 已发送完毕，不能再修改；请换一个编码")
    if spec.first_run_at(now) is None:
        raise CampaignError(f"群发活动 {spec.code} 的 until（{spec.schedule.until}）早于第一次发送时间，不会发送")
    before = existing.model_dump() if existing is not None else None
    campaign = existing or Campaign(
        corp_id=corp_id,
        code=spec.code,
        chat_type=spec.chat_type,
        spec_hash=digest,
        schedule_kind=spec.schedule.kind,
        status="",
        created_at=now,
    )
    campaign.name = spec.name
    campaign.chat_type = spec.chat_type
    campaign.spec = spec.stored()
    campaign.spec_hash = digest
    campaign.schedule_kind = spec.schedule.kind
    campaign.cron = spec.schedule.cron or ""
    campaign.run_at = spec.schedule.at
    campaign.next_run_at = spec.first_run_at(now)
    campaign.requires_approval = spec.approval
    campaign.status = (CampaignStatus.PENDING_APPROVAL if spec.approval else CampaignStatus.SCHEDULED).value
    campaign.created_by = by
    campaign.approved_by, campaign.approved_at, campaign.rejected_reason = "", None, ""
    campaign.updated_at = now
    session.add(campaign)
    await session.flush()
    outcome = "updated" if existing is not None else "created"
    await _audit(session, campaign, f"campaign.{outcome}", by, before, {"hash": digest})
    return Saved(campaign, outcome)


async def _audit(
    session: AsyncSession,
    campaign: Campaign,
    action: str,
    by: str,
    before: dict[str, object] | None,
    detail: dict[str, object],
) -> None:
    await session.flush()
    await audit.record_change(
        session,
        campaign.corp_id,
        action,
        "campaign",
        campaign.code,
        actor=by,
        before=before,
        after=campaign.model_dump(),
        detail=detail,
    )


async def _pending_for_decision(session: AsyncSession, corp_id: str, code: str, by: str, verb: str) -> Campaign:
    """The pending campaign ``code`` if ``by`` may approve or reject it (an approver who did not save it)."""
    await require_actor(session, by, Permission.CAMPAIGN_APPROVE)
    campaign = await get_campaign(session, corp_id, code)
    if campaign.status != CampaignStatus.PENDING_APPROVAL.value:
        status = STATUS_CN.get(campaign.status, campaign.status)
        raise CampaignError(f"群发活动 {code} 当前状态为{status}，{'不需要审批' if verb == 'approve' else '不能驳回'}")
    if by == campaign.created_by:
        raise CampaignError(
            f"创建人不能{'审批' if verb == 'approve' else '驳回'}自己的群发活动，请由另一位运营或经理处理"
        )
    return campaign


async def approve(session: AsyncSession, corp_id: str, code: str, *, by: str, now: datetime) -> Campaign:
    campaign = await _pending_for_decision(session, corp_id, code, by, "approve")
    before = campaign.model_dump()
    campaign.status = CampaignStatus.SCHEDULED.value
    campaign.approved_by, campaign.approved_at, campaign.updated_at = by, now, now
    session.add(campaign)
    await _audit(session, campaign, "campaign.approved", by, before, {"hash": campaign.spec_hash})
    return campaign


async def reject(session: AsyncSession, corp_id: str, code: str, *, by: str, reason: str, now: datetime) -> Campaign:
    campaign = await _pending_for_decision(session, corp_id, code, by, "reject")
    if not reason.strip():
        raise CampaignError("驳回需要填写原因")
    before = campaign.model_dump()
    campaign.status = CampaignStatus.REJECTED.value
    campaign.rejected_reason, campaign.updated_at = reason.strip()[:512], now
    session.add(campaign)
    await _audit(session, campaign, "campaign.rejected", by, before, {"reason": reason})
    return campaign


async def cancel(session: AsyncSession, corp_id: str, code: str, *, by: str, now: datetime) -> int:
    """Cancel the campaign: no further run; batches whose command has not started are withdrawn; tasks already
    created are cancelled at WeCom by the tracking tick (those the owner already sent stay sent). Returns how
    many batches were withdrawn before reaching WeCom."""
    await require_actor(session, by, Permission.CAMPAIGN_EDIT)
    campaign = await get_campaign(session, corp_id, code)
    if campaign.status == CampaignStatus.CANCELLED.value:
        return 0
    before = campaign.model_dump()
    campaign.status, campaign.next_run_at = CampaignStatus.CANCELLED.value, None
    campaign.cancelled_by, campaign.cancelled_at, campaign.updated_at = by, now, now
    session.add(campaign)
    runs = (
        await session.exec(
            select(CampaignRun).where(
                CampaignRun.campaign_id == campaign.id,
                col(CampaignRun.status).in_((RunStatus.SENDING.value, RunStatus.TRACKING.value)),
            )
        )
    ).all()
    withdrawn = 0
    for run in runs:
        run.status = RunStatus.CANCELLED.value
        session.add(run)
        batches = (
            await session.exec(
                select(CampaignBatch).where(
                    CampaignBatch.run_id == run.id, CampaignBatch.status == BatchStatus.QUEUED.value
                )
            )
        ).all()
        for batch in batches:
            result = await session.exec(
                update(OutboxCommand)
                .where(
                    col(OutboxCommand.idempotency_key) == batch.key,
                    col(OutboxCommand.kind) == CommandKind.ADD_MSG_TEMPLATE.value,
                    col(OutboxCommand.status) == CommandStatus.PENDING.value,
                )
                .values(
                    status=CommandStatus.FAILED.value,
                    last_error="campaign cancelled before the call",
                    finished_at=now,
                    updated_at=now,
                )
            )
            if result.rowcount:
                withdrawn += 1
                batch.status, batch.error, batch.updated_at = BatchStatus.CANCELLED.value, "活动已取消", now
                session.add(batch)
                await mark_targets(session, run.id, batch.batch_no, TargetStatus.CANCELLED, "cancelled")
        await session.exec(
            update(CampaignBatch)
            .where(col(CampaignBatch.run_id) == run.id, col(CampaignBatch.status) == BatchStatus.CREATED.value)
            .values(next_track_at=now)
        )
    await _audit(session, campaign, "campaign.cancelled", by, before, {"withdrawn": withdrawn})
    return withdrawn


async def mark_targets(
    session: AsyncSession, run_id: int | None, batch_no: int, status: TargetStatus, reason: str
) -> None:
    await session.exec(
        update(CampaignTarget)
        .where(col(CampaignTarget.run_id) == run_id, col(CampaignTarget.batch_no) == batch_no)
        .values(status=status.value, reason=reason)
    )


def _next_fire(campaign: Campaign, spec: CampaignSpec, fire: datetime, now: datetime) -> datetime | None:
    """The cron fire after this one (fires missed while nothing ran are not sent late); None for one-offs."""
    if campaign.schedule_kind != "cron" or not campaign.cron:
        return None
    return spec.within_until(next_cron_fire(campaign.cron, max(fire, now)))


def _latest_due(campaign: Campaign, spec: CampaignSpec, fire: datetime, now: datetime) -> datetime:
    """The latest cron fire not after ``now``: of several fires missed while nothing ran, only the last is planned
    (the earlier ones are not sent late); ``fire`` itself for one-offs."""
    if campaign.schedule_kind != "cron" or not campaign.cron:
        return fire
    recent = spec.within_until(next_cron_fire(campaign.cron, now - timedelta(days=1)))
    if recent is not None and fire < recent <= now:  # skip the walk over a long outage
        fire = recent
    while (following := spec.within_until(next_cron_fire(campaign.cron, fire))) is not None and following <= now:
        fire = following
    return fire


async def run_due(
    session_factory: SessionFactory,
    corp_id: str,
    now: datetime,
    policy: Policy,
    *,
    calls_per_minute: int,
    links: LinkWrapper | None = None,
    only: str | None = None,
) -> list[CampaignRun]:
    """Plan every due run (or only campaign ``only``); each campaign in its own transaction."""
    async with session_factory() as session:
        query = select(Campaign.id).where(
            Campaign.corp_id == corp_id,
            Campaign.status == CampaignStatus.SCHEDULED.value,
            col(Campaign.next_run_at) <= now,
        )
        if only is not None:
            query = query.where(Campaign.code == only)
        ids = list((await session.exec(query.order_by(col(Campaign.next_run_at)))).all())
    planned: list[CampaignRun] = []
    for campaign_id in ids:
        try:
            async with write_transaction(session_factory) as session:
                run = await _run_one(session, campaign_id, now, policy, calls_per_minute, links)
        except (ValidationError, CampaignRenderError) as exc:  # a stored spec this build cannot use: skip it
            log.error("campaign cannot be planned", extra={"campaign_id": campaign_id, "error": str(exc)})
            continue
        if run is not None:
            planned.append(run)
    return planned


async def _run_one(
    session: AsyncSession,
    campaign_id: int | None,
    now: datetime,
    policy: Policy,
    calls_per_minute: int,
    links: LinkWrapper | None,
) -> CampaignRun | None:
    campaign = (await session.exec(select(Campaign).where(Campaign.id == campaign_id).with_for_update())).first()
    if campaign is None or campaign.status != CampaignStatus.SCHEDULED.value or campaign.next_run_at is None:
        return None
    fire = campaign.next_run_at
    if fire > now:
        return None
    spec = spec_of(campaign)
    fire = _latest_due(campaign, spec, fire, now)
    slot = slot_of(fire, campaign.schedule_kind)
    if policy.in_quiet_hours(now):
        if policy.next_allowed(now) > fire + timedelta(days=policy.max_defer_days):
            await _record_skipped(session, campaign, slot, fire, now, "超过最长顺延天数（免打扰时段）")
            _advance(campaign, spec, fire, now)
            session.add(campaign)
        return None  # waits for the end of quiet hours, then plans this same slot
    run = await plan_run(
        session,
        campaign,
        spec,
        slot=slot,
        fire_at=fire,
        now=now,
        policy=policy,
        calls_per_minute=calls_per_minute,
        links=links,
    )
    _advance(campaign, spec, fire, now)
    session.add(campaign)
    return run


def _advance(campaign: Campaign, spec: CampaignSpec, fire: datetime, now: datetime) -> None:
    campaign.next_run_at = _next_fire(campaign, spec, fire, now)
    if campaign.next_run_at is None:
        campaign.status = CampaignStatus.DONE.value
    campaign.updated_at = now


async def _record_skipped(
    session: AsyncSession, campaign: Campaign, slot: str, fire: datetime, now: datetime, note: str
) -> None:
    await insert_ignoring_conflict(
        session,
        CampaignRun.__table__,  # type: ignore[attr-defined]
        {
            "campaign_id": campaign.id,
            "corp_id": campaign.corp_id,
            "slot": slot,
            "fire_at": fire,
            "status": RunStatus.SKIPPED.value,
            "targets": 0,
            "skipped": 0,
            "batches": 0,
            "note": note,
            "planned_at": now,
            "finished_at": now,
        },
        ("campaign_id", "slot"),
    )
    log.warning("campaign run skipped", extra={"campaign": campaign.code, "slot": slot, "reason": note})
