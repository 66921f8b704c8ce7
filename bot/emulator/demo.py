"""`lianyi demo`: the whole loop on SQLite with the WeCom emulator and simulated customers.

Customers add advisors through dealer QR codes (and ads, referrals, events), join and leave customer groups,
staff edit tags and delete contacts; every change reaches Lianyi as a real encrypted callback. Then the roster is
imported, a few customers ask buying questions and become leads for their advisors (one advisor never accepts,
so the SLA reminds them), and a group campaign is saved, approved by a manager, sent and reported
(:mod:`bot.emulator.demo_journeys`). The demo prints its corp id, database and the environment lines for running
`lianyi` commands against that database, then what Lianyi made of it all — contacts by channel, groups, tags,
welcome messages and their latencies, leads, the SLA rung, the campaign's report — and leaves the server running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from bot.emulator.demo_journeys import (
    CAMPAIGN_CODE,
    JourneyReport,
    JumpingClock,
    format_journeys,
    import_demo_roster,
    run_campaign,
    run_leads,
    summarise_leads,
)
from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import ScenarioReport, load_scenario, plan_steps, run_scenario
from bot.outbox import runner as outbox_runner
from bot.runtime import migrate as migrations
from scrm.db import SessionFactory
from scrm.models import Contact, CustomerGroup, FollowRelation, GroupMember, OutboxCommand, Tag


@dataclass
class DemoReport:
    scenario: dict[str, Any]
    contacts: int = 0
    follows_active: int = 0
    follows_deleted: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)
    groups_active: int = 0
    groups_dismissed: int = 0
    group_members: int = 0
    tags: int = 0
    commands: Counter[tuple[str, str]] = field(default_factory=Counter)
    welcome_codes_issued: int = 0
    welcomes_sent: int = 0
    welcome_codes_reused: int = 0
    welcome_latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        data = sorted(self.welcome_latencies_ms)
        if not data:
            return 0.0
        if len(data) == 1:
            return data[0]
        return statistics.quantiles(data, n=100, method="inclusive")[int(q) - 1]


async def _database_summary(factory: SessionFactory, report: DemoReport) -> None:
    async with factory() as s:
        report.contacts = (await s.exec(select(func.count()).select_from(Contact))).one()
        active = col(FollowRelation.deleted_at).is_(None)
        report.follows_active = (await s.exec(select(func.count()).select_from(FollowRelation).where(active))).one()
        report.follows_deleted = (await s.exec(select(func.count()).select_from(FollowRelation).where(~active))).one()
        for channel, n in (
            await s.exec(
                select(FollowRelation.channel, func.count()).where(active).group_by(col(FollowRelation.channel))
            )
        ).all():
            report.by_channel[channel or "(未知)"] = n
        report.groups_active = (
            await s.exec(select(func.count()).select_from(CustomerGroup).where(CustomerGroup.status == "active"))
        ).one()
        report.groups_dismissed = (
            await s.exec(select(func.count()).select_from(CustomerGroup).where(CustomerGroup.status == "dismissed"))
        ).one()
        report.group_members = (
            await s.exec(select(func.count()).select_from(GroupMember).where(col(GroupMember.left_at).is_(None)))
        ).one()
        report.tags = (await s.exec(select(func.count()).select_from(Tag).where(col(Tag.deleted).is_(False)))).one()
        for kind, status, n in (
            await s.exec(
                select(OutboxCommand.kind, OutboxCommand.status, func.count()).group_by(
                    col(OutboxCommand.kind), col(OutboxCommand.status)
                )
            )
        ).all():
            report.commands[(kind, status)] = n


def _welcome_summary(stack: LocalStack, report: DemoReport) -> None:
    state = stack.state
    issued = {code.code: code for code in state.welcome_codes.all()}
    report.welcome_codes_issued = len(issued)
    report.welcomes_sent = sum(state.counters.welcome_sends.values())
    report.welcome_codes_reused = sum(1 for n in state.counters.welcome_sends.values() if n > 1)
    for sent in state.counters.welcomes:
        code = issued.get(sent.code)
        if code is not None:
            report.welcome_latencies_ms.append((sent.at - code.issued_at) * 1000)


async def run_demo_loop(stack: LocalStack, *, seed: int | None = None) -> DemoReport:
    """Seed dealers, sync from the emulator, play the scenario through real callbacks, wait, summarise."""
    await stack.seed_dealers()
    await stack.full_sync()
    driver = stack.driver()
    if not await driver.verify_url():
        raise RuntimeError("callback URL verification failed")
    steps = plan_steps(stack.scenario, stack.state, seed)
    scenario_report: ScenarioReport = await run_scenario(
        stack.state, driver, steps, concurrency=stack.scenario.concurrency
    )
    await stack.wait_until_settled(within=120)
    report = DemoReport(scenario=scenario_report.as_dict())
    await _database_summary(stack.session_factory, report)
    _welcome_summary(stack, report)
    return report


def format_report(report: DemoReport) -> list[str]:
    lines = [
        "== 涟漪 Lianyi 演示结果 ==",
        f"回调：{report.scenario['callbacks_ok']} 条成功，{report.scenario['callbacks_failed']} 条失败，"
        f"共 {report.scenario['attempts']} 次投递，用时 {report.scenario['elapsed_s']} 秒",
        f"客户：{report.contacts} 位；好友关系 {report.follows_active} 条有效，{report.follows_deleted} 条已删除",
        "渠道分布：" + "，".join(f"{ch} {n}" for ch, n in report.by_channel.most_common()),
        f"客户群：{report.groups_active} 个在用，{report.groups_dismissed} 个已解散，群成员 {report.group_members} 人",
        f"企业标签：{report.tags} 个",
        f"欢迎语：发放欢迎码 {report.welcome_codes_issued} 个，已发送 {report.welcomes_sent} 条，"
        f"重复使用 {report.welcome_codes_reused} 个",
    ]
    if report.welcome_latencies_ms:
        lines.append(
            f"欢迎语延迟（事件发生 → 企业微信收到）：p50 {report.percentile(50):.0f} ms，"
            f"p99 {report.percentile(99):.0f} ms，最大 {max(report.welcome_latencies_ms):.0f} ms"
        )
    lines.append("出站指令（类型 / 状态 / 数量）：")
    for (kind, status), n in sorted(report.commands.items()):
        lines.append(f"  {kind:<18} {status:<8} {n}")
    return lines


def _remove_sqlite_files(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on ``host:port`` (checked before the demo deletes its database)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


EXPECTED_ERRCODES = {84061: "客户已删除好友", 40050: "客户群已解散"}


class KnownWarnings(logging.Filter):
    """Counts, and keeps off the console, the WeCom errors the scenario causes on purpose: a customer deleted
    (84061) or a group dismissed (40050) before Lianyi fetched their details. Summarised in one Chinese line."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[int] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        errcode = getattr(record, "errcode", None)
        if record.levelno == logging.WARNING and errcode in EXPECTED_ERRCODES:
            self.counts[errcode] += 1
            return False
        return True

    def summary(self) -> str | None:
        if not self.counts:
            return None
        parts = "，".join(f"{code}（{EXPECTED_ERRCODES[code]}）{n} 次" for code, n in sorted(self.counts.items()))
        return f"企业微信返回 {parts}：模拟客户在 Lianyi 拉取详情前已删除或解散，属正常情况，不重试"


def _environment_lines(stack: LocalStack, db_path: Path) -> list[str]:
    s = stack.settings
    return [
        f"企业 ID（corp id）：{s.corp_id}    数据库：{db_path.resolve()}",
        "在另一个终端对演示数据库运行 lianyi 命令（服务运行期间）：",
        f"  export LIANYI_DATABASE_URL=sqlite+aiosqlite:///{db_path.resolve()} LIANYI_CORP_ID={s.corp_id}",
        f"  export LIANYI_CALLBACK_TOKEN={s.callback_token} LIANYI_CALLBACK_AES_KEY={s.callback_aes_key}",
        f"  export LIANYI_SECRET_KEY={s.secret_key}",
        f"  lianyi campaign report {CAMPAIGN_CODE}",
        "  lianyi sop render new_customer_nurture --contact <客户 external_userid>",
    ]


async def demo_main(
    *, db_path: Path, port: int, scenario_path: str | None, keep_running: bool, seed: int | None
) -> int:
    if port_in_use(port):
        print(
            f"端口 {port} 已被占用，请用 --port 换一个端口 / port {port} is already in use: pass --port",
            file=sys.stderr,
        )
        return 2
    await asyncio.to_thread(_remove_sqlite_files, db_path)
    database_url = f"sqlite+aiosqlite:///{db_path}"
    await asyncio.to_thread(migrations.upgrade, database_url)
    scenario = load_scenario(scenario_path)
    clock = JumpingClock()
    known = KnownWarnings()
    logging.getLogger(outbox_runner.__name__).addFilter(known)  # where outbox outcomes are logged
    stack = LocalStack(
        scenario=scenario,
        database_url=database_url,
        port=port,
        clock=clock,
        settings_overrides={
            "log_level": "WARNING",
            "log_json": False,
            "ingest_token": secrets.token_hex(16),
            # the demo's own secret key unless one is set (LIANYI_SECRET_KEY is required everywhere else)
            "secret_key": os.environ.get("LIANYI_SECRET_KEY") or secrets.token_urlsafe(32),
        },
    )
    async with stack:
        base = stack.callback_url.removesuffix("/wecom/callback")
        print(f"WeCom 模拟器：{stack.emulator.base_url}    Lianyi：{stack.callback_url}", flush=True)
        for line in _environment_lines(stack, db_path):
            print(line, flush=True)
        print("正在同步成员与标签，并模拟客户扫码加好友、进群……", flush=True)
        report = await run_demo_loop(stack, seed=seed)
        print("正在导入花名册，模拟客户咨询（线索）、顾问接单、群发活动……", flush=True)
        journeys = JourneyReport()
        await import_demo_roster(stack)
        await run_leads(stack, clock, base, journeys)
        await run_campaign(stack, clock, journeys)
        await stack.wait_until_settled(within=120)
        await summarise_leads(stack, journeys)
        lines = [*format_report(report), *format_journeys(journeys)]
        warnings = known.summary()
        for line in [*lines, *([warnings] if warnings else [])]:
            print(line, flush=True)
        if keep_running:
            print(f"服务仍在运行：{base}/healthz  {base}/metrics  （Ctrl-C 退出）", flush=True)
            await asyncio.Event().wait()
    return 0 if report.scenario["callbacks_failed"] == 0 and report.welcome_codes_reused == 0 else 1
