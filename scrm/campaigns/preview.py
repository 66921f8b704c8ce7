"""``lianyi campaign plan``: what sending a campaign now would really do, without writing anything.

One truth with the tick (:func:`scrm.campaigns.service.run_due`): inside the policy's quiet hours a run is not
planned target by target and skipped — the whole run waits for the end of quiet hours and is planned then. So
the preview plans the run as of that moment and says when it will be sent ("免打扰时段：将于 09:00 发送"); a
wait longer than ``max_defer_days`` past the fire means the run is recorded as skipped, and the preview says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.campaigns.planner import Plan, build_plan
from scrm.campaigns.spec import CampaignSpec
from scrm.contact_policy import Policy
from scrm.links import LinkWrapper
from scrm.models import Campaign


@dataclass(frozen=True, slots=True)
class RunPreview:
    plan: Plan
    send_at: datetime  # when the run would be planned: now, or the end of quiet hours
    deferred: bool  # now is in quiet hours: the run waits until send_at
    expired: bool  # the wait is longer than max_defer_days: the run would be skipped, nothing sent


async def preview_run(
    session: AsyncSession,
    campaign: Campaign,
    spec: CampaignSpec,
    *,
    now: datetime,
    policy: Policy,
    calls_per_minute: int,
    links: LinkWrapper | None = None,
) -> RunPreview:
    """The plan of the campaign's run as the tick would make it if it were due ``now`` (reads only)."""
    deferred = policy.in_quiet_hours(now)
    send_at = policy.next_allowed(now) if deferred else now
    fire = min(campaign.next_run_at or now, now)
    expired = deferred and send_at > fire + timedelta(days=policy.max_defer_days)
    plan = await build_plan(
        session,
        campaign,
        spec,
        slot="preview",
        now=send_at,
        policy=policy,
        calls_per_minute=calls_per_minute,
        links=links,
    )
    return RunPreview(plan, send_at, deferred, expired)


def preview_lines(preview: RunPreview, code: str, policy: Policy, now: datetime, rate: int) -> list[str]:
    """The Chinese summary ``campaign plan`` prints (the skip reasons table follows it); ``rate``: calls a minute."""
    plan = preview.plan
    senders = len({b.sender for b in plan.batches})
    minutes = max(0, (len(plan.batches) - 1) // max(1, rate))
    lines = []
    if preview.expired:
        lines.append("免打扰时段：等到结束已超过最长顺延天数，本次不会发送（记为跳过）")
    elif preview.deferred:
        lines.append(f"免打扰时段：将于 {_local(preview.send_at, policy, now)} 发送")
    lines += [
        f"群发活动 {code}：目标 {len(plan.targets)}，计划发送 {len(plan.batch_of)}，跳过 {len(plan.skipped)}",
        f"群发任务 {len(plan.batches)} 个（{senders} 位发送成员），按每分钟 {rate} 次调用约需 {minutes} 分钟",
    ]
    return lines


def _local(at: datetime, policy: Policy, now: datetime) -> str:
    """``09:00`` when ``at`` is on today's local date, else ``12月5日 09:00``."""
    local = at.astimezone(policy.tz)
    if local.date() == now.astimezone(policy.tz).date():
        return f"{local:%H:%M}"
    return f"{local.month}月{local.day}日 {local:%H:%M}"
