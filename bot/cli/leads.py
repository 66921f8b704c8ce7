"""``lianyi leads report [--dealer CODE] [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--json]``,
and ``lianyi leads show LEAD_ID``."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import click
from sqlmodel import col, select

from bot.cli.database import ToolFailure, run_with_corp
from bot.cli.text_table import table
from bot.settings import QuerySettings, Settings, load_query_settings
from bot.web.leads_api import local_day_range
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.leads.actions import LeadActionError
from scrm.leads.history import EVENT_NAMES
from scrm.leads.metrics import DurationStats, GroupRate, LeadMetrics, lead_metrics
from scrm.leads.rules import LOST_REASONS, HandoffRulesError, rules_in
from scrm.leads.transitions import status_name
from scrm.models import Dealer, Lead, LeadEvent


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def _timezone(settings: Settings | QuerySettings) -> str:
    try:
        return rules_in(settings.sop_dir).timezone
    except HandoffRulesError:
        return "Asia/Shanghai"


def _minutes(stats: DurationStats) -> str:
    if stats.count == 0:
        return "无数据"
    return f"中位数 {stats.median} 分钟，P90 {stats.p90} 分钟（{stats.count} 条）"


def _rates(title: str, label: str, groups: list[GroupRate]) -> str:
    rows = [
        (g.key or "-", g.name, g.leads, g.converted, f"{g.conversion:.1%}", g.lost, f"{g.lost_rate:.1%}")
        for g in groups
    ]
    return f"{title}\n" + table([label, "名称", "线索", "成交", "成交率", "战败", "战败率"], rows)


def render_report(metrics: LeadMetrics, tz: str) -> str:
    zone = ZoneInfo(tz)
    first = metrics.since.astimezone(zone).date()
    last = (metrics.until.astimezone(zone) - timedelta(seconds=1)).date()
    parts = [f"线索报表 {first} 至 {last}：共 {metrics.leads} 条线索"]
    if metrics.leads == 0:
        return parts[0]
    status_rows = [(status_name(s), n) for s, n in metrics.by_status.items()]
    parts.append("按状态\n" + table(["状态", "数量"], status_rows))
    parts.append(f"接单用时：{_minutes(metrics.time_to_accept)}\n首次联系用时：{_minutes(metrics.time_to_contact)}")
    parts.append(_rates("按门店", "门店代码", metrics.by_dealer))
    parts.append(_rates("按顾问", "顾问", metrics.by_advisor))
    parts.append(_rates("按渠道", "渠道", metrics.by_channel))
    if metrics.lost_by_reason:
        lost_rows = [(LOST_REASONS.get(r, r or "未填写"), n) for r, n in metrics.lost_by_reason.items()]
        parts.append("战败原因\n" + table(["原因", "数量"], lost_rows))
    breach_rows = [(EVENT_NAMES.get(k, k), n) for k, n in metrics.sla_breaches_by_kind.items()]
    breaches = f"超时（SLA 升级）线索：{metrics.sla_breaches} 条"
    parts.append(breaches + ("\n" + table(["升级动作", "线索数"], breach_rows) if breach_rows else ""))
    return "\n\n".join(parts)


async def _report(
    sessions: SessionFactory, corp_id: str, dealer_code: str, since: datetime, until: datetime
) -> LeadMetrics:
    async with sessions() as session:
        dealer_id = None
        if dealer_code:
            statement = select(Dealer.id).where(Dealer.corp_id == corp_id, Dealer.code == dealer_code)
            dealer_id = (await session.exec(statement)).first()
            if dealer_id is None:
                raise ToolFailure(f"门店代码 {dealer_code} 不存在")
        return await lead_metrics(session, corp_id, since=since, until=until, dealer_id=dealer_id)


def _detail_text(detail: dict[str, object] | None) -> str:
    if not detail:
        return ""
    return "，".join(f"{k}={v}" for k, v in detail.items() if v not in ("", None, [], {}))


async def _history(sessions: SessionFactory, corp_id: str, lead_id: int) -> tuple[Lead, Dealer | None, list[LeadEvent]]:
    async with sessions() as session:
        lead = (await session.exec(select(Lead).where(Lead.id == lead_id, Lead.corp_id == corp_id))).first()
        if lead is None:
            raise ToolFailure(f"线索 {lead_id} 不存在")
        dealer = await session.get(Dealer, lead.dealer_id) if lead.dealer_id is not None else None
        statement = select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(col(LeadEvent.at), col(LeadEvent.id))
        return lead, dealer, list((await session.exec(statement)).all())


def render_history(lead: Lead, dealer: Dealer | None, history: list[LeadEvent], tz: str) -> str:
    zone = ZoneInfo(tz)
    where = f"{dealer.name or dealer.code}（{dealer.code}）" if dealer is not None else "无门店"
    head = (
        f"线索 {lead.id}：客户 {lead.external_userid}，{lead.level or '-'} 级 {lead.score} 分，"
        f"状态「{status_name(lead.status)}」，门店 {where}，顾问 {lead.advisor_userid or '-'}"
    )
    if lead.lost_reason:
        head += f"\n战败原因：{LOST_REASONS.get(lead.lost_reason, lead.lost_reason)}" + (
            f"（{lead.lost_note}）" if lead.lost_note else ""
        )
    rows = [
        (
            e.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            EVENT_NAMES.get(e.kind, e.kind),
            f"{status_name(e.from_status)} → {status_name(e.to_status)}" if e.to_status else "",
            e.actor,
            _detail_text(e.detail),
        )
        for e in history
    ]
    return head + "\n\n" + table(["时间", "事件", "状态", "操作人", "详情"], rows)


@click.group("leads")
def leads() -> None:
    """Leads handed to dealers (线索): reports and history."""


@leads.command("report")
@click.option("--dealer", "dealer_code", default="", help="One dealer's code (只看某门店).")
@click.option("--since", default=None, help="First day, YYYY-MM-DD (default: 30 days ago).")
@click.option("--until", default=None, help="Last day, YYYY-MM-DD, inclusive (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def report_command(dealer_code: str, since: str | None, until: str | None, as_json: bool) -> None:
    """Lead metrics by status, dealer, advisor and channel (线索报表)."""
    settings = load_query_settings()
    tz = _timezone(settings)
    try:
        start, end = local_day_range(since, until, tz, utcnow())
    except LeadActionError as exc:
        _fail(exc.message_zh)
        return
    metrics = run_with_corp(
        settings.database_url, settings.corp_id, lambda sessions, corp: _report(sessions, corp, dealer_code, start, end)
    )
    if as_json:
        click.echo(json.dumps(metrics.as_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(render_report(metrics, tz))


@leads.command("show")
@click.argument("lead_id", type=int)
def show_command(lead_id: int) -> None:
    """One lead and its full history (线索详情与历史)."""
    settings = load_query_settings()
    lead, dealer, history = run_with_corp(
        settings.database_url, settings.corp_id, lambda sessions, corp: _history(sessions, corp, lead_id)
    )
    click.echo(render_history(lead, dealer, history, _timezone(settings)))
