"""What a campaign did, per run: targets, skips by reason, tasks, confirmations, deliveries, link clicks.

- confirmed % = tasks their owner confirmed / tasks created;
- delivered % = targets WeCom reports sent / targets planned (skipped ones excluded);
- quota skips = targets the planner skipped for WeCom's group-send quota + targets WeCom answered status 3;
- link clicks = tracked-link clicks whose source is the run (``campaign:<code>:<slot>``, see
  :mod:`scrm.links`).

:func:`target_rows` gives one row per target for the CSV export.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.campaigns.planner import link_source
from scrm.campaigns.service import STATUS_CN, get_campaign
from scrm.models import AuditLog, BatchStatus, Campaign, CampaignBatch, CampaignRun, CampaignTarget, TargetStatus
from scrm.timing import CHINA_TZ

RUN_STATUS_CN = {
    "sending": "发送中",
    "tracking": "跟踪中",
    "done": "已完成",
    "skipped": "已跳过",
    "cancelled": "已取消",
}
TARGET_STATUS_CN = {
    "planned": "待发送",
    "skipped": "已跳过",
    "failed": "失败",
    "unsent": "群主未发送",
    "sent": "已送达",
    "not_friend": "非好友/已不在群",
    "quota_hit": "超出群发次数上限",
    "cancelled": "已取消",
}
REASON_CN = {
    "quota": "群发次数已达上限",
    "cap_day": "当日触达已达上限",
    "cap_week": "本周触达已达上限",
    "quiet_hours": "免打扰时段",
    "no_sender": "没有可用的发送成员",
    "sender_inactive": "发送成员已停用或无客户联系权限",
    "render_error": "内容渲染失败",
    "wecom_fail_list": "企业微信拒绝（fail_list）",
    "command_failed": "创建群发任务失败",
    "cancelled": "活动已取消",
    "defer_expired": "顺延超时",
}


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


@dataclass
class RunReport:
    slot: str
    status: str
    planned_at: datetime
    targets: int
    planned: int
    skipped: dict[str, int]
    batches: int
    tasks_created: int
    tasks_failed: int
    tasks_cancelled: int
    tasks_confirmed: int
    tasks_recovered: int
    reminders: int
    results: dict[str, int]
    quota_skips: int
    link_clicks: int
    note: str = ""

    @property
    def confirmed_pct(self) -> float:
        return _pct(self.tasks_confirmed, self.tasks_created + self.tasks_cancelled)

    @property
    def delivered_pct(self) -> float:
        return _pct(self.results.get(TargetStatus.SENT.value, 0), self.planned)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["planned_at"] = self.planned_at.isoformat()
        data["confirmed_pct"] = self.confirmed_pct
        data["delivered_pct"] = self.delivered_pct
        return data


@dataclass
class CampaignReport:
    code: str
    name: str
    chat_type: str
    status: str
    runs: list[RunReport] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "chat_type": self.chat_type,
            "status": self.status,
            "runs": [r.as_json() for r in self.runs],
        }


async def _clicks(session: AsyncSession, corp_id: str, sources: set[str], since: datetime) -> Counter[str]:
    rows = await session.exec(
        select(AuditLog.detail).where(
            AuditLog.corp_id == corp_id, AuditLog.action == "link.clicked", col(AuditLog.created_at) >= since
        )
    )
    found: Counter[str] = Counter()
    for detail in rows.all():
        source = str((detail or {}).get("source") or "")
        if source in sources:
            found[source] += 1
    return found


async def campaign_report(session: AsyncSession, corp_id: str, code: str) -> CampaignReport:
    campaign = await get_campaign(session, corp_id, code)
    report = CampaignReport(campaign.code, campaign.name, campaign.chat_type, campaign.status)
    runs = list(
        (
            await session.exec(
                select(CampaignRun).where(CampaignRun.campaign_id == campaign.id).order_by(col(CampaignRun.fire_at))
            )
        ).all()
    )
    if not runs:
        return report
    clicks = await _clicks(session, corp_id, {link_source(code, r.slot) for r in runs}, min(r.planned_at for r in runs))
    for run in runs:
        batches = (await session.exec(select(CampaignBatch).where(CampaignBatch.run_id == run.id))).all()
        statuses = (
            await session.exec(
                select(CampaignTarget.status, CampaignTarget.reason).where(CampaignTarget.run_id == run.id)
            )
        ).all()
        skipped = Counter(reason for status, reason in statuses if status == TargetStatus.SKIPPED.value)
        results = Counter(status for status, _ in statuses if status != TargetStatus.SKIPPED.value)
        created = [b for b in batches if b.msgid]
        report.runs.append(
            RunReport(
                slot=run.slot,
                status=run.status,
                planned_at=run.planned_at,
                targets=len(statuses),
                planned=len(statuses) - sum(skipped.values()),
                skipped=dict(skipped),
                batches=len(batches),
                tasks_created=sum(1 for b in created if b.status == BatchStatus.CREATED.value),
                tasks_failed=sum(1 for b in batches if b.status == BatchStatus.FAILED.value),
                tasks_cancelled=sum(1 for b in created if b.status == BatchStatus.CANCELLED.value),
                tasks_confirmed=sum(1 for b in created if b.confirmed_at is not None),
                tasks_recovered=sum(1 for b in batches if b.recovered),
                reminders=sum(len(b.reminders or []) for b in batches),
                results=dict(results),
                quota_skips=skipped.get("quota", 0) + results.get(TargetStatus.QUOTA_HIT.value, 0),
                link_clicks=clicks.get(link_source(code, run.slot), 0),
                note=run.note,
            )
        )
    return report


CSV_COLUMNS = ("活动编码", "批次时间", "目标类型", "目标ID", "名称", "发送成员", "批次号", "任务ID", "状态", "原因")


async def target_rows(session: AsyncSession, corp_id: str, code: str) -> list[list[str]]:
    """One row per target of every run (CSV_COLUMNS), statuses and reasons in Chinese."""
    campaign: Campaign = await get_campaign(session, corp_id, code)
    rows: list[list[str]] = []
    runs = (
        await session.exec(
            select(CampaignRun).where(CampaignRun.campaign_id == campaign.id).order_by(col(CampaignRun.fire_at))
        )
    ).all()
    for run in runs:
        msgids = {
            b.batch_no: b.msgid
            for b in (await session.exec(select(CampaignBatch).where(CampaignBatch.run_id == run.id))).all()
        }
        targets = await session.exec(
            select(CampaignTarget).where(CampaignTarget.run_id == run.id).order_by(col(CampaignTarget.target_id))
        )
        for t in targets.all():
            rows.append(
                [
                    code,
                    run.slot,
                    "客户群" if t.target_type == "group" else "客户",
                    t.target_id,
                    t.name,
                    t.sender,
                    "" if t.batch_no is None else str(t.batch_no),
                    msgids.get(t.batch_no, "") if t.batch_no is not None else "",
                    TARGET_STATUS_CN.get(t.status, t.status),
                    REASON_CN.get(t.reason, t.reason),
                ]
            )
    return rows


def write_csv(rows: list[list[str]], out: IO[str]) -> None:
    """UTF-8 CSV with a BOM so Excel opens the Chinese text correctly."""
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)


def render_report(report: CampaignReport) -> str:
    """The report as text for operators (Chinese)."""
    kind = "客户群群发" if report.chat_type == "group" else "1v1 群发"
    head = f"群发活动 {report.code}「{report.name}」（{kind}），状态：{STATUS_CN.get(report.status, report.status)}"
    if not report.runs:
        return head + "\n尚未发送。"
    parts = [head]
    for r in report.runs:
        local = r.planned_at.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")
        skipped = "，".join(f"{REASON_CN.get(k, k)} {v}" for k, v in sorted(r.skipped.items())) or "无"
        results = "，".join(
            f"{TARGET_STATUS_CN.get(k, k)} {v}" for k, v in sorted(r.results.items(), key=lambda kv: -kv[1])
        )
        lines = [
            f"批次 {r.slot}（{RUN_STATUS_CN.get(r.status, r.status)}，{local} 规划）"
            + (f"：{r.note}" if r.note else ""),
            f"  目标 {r.targets}，计划发送 {r.planned}，跳过 {sum(r.skipped.values())}（{skipped}）",
            f"  群发任务 {r.batches}：已创建 {r.tasks_created}，失败 {r.tasks_failed}，已取消 {r.tasks_cancelled}，"
            f"其中对账找回 {r.tasks_recovered}，提醒 {r.reminders} 次",
            f"  群主确认率 {r.confirmed_pct}%，送达率 {r.delivered_pct}%，超出次数上限 {r.quota_skips}，"
            f"链接点击 {r.link_clicks}",
            f"  目标状态：{results or '无'}",
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
