"""Lead metrics on both databases (counts, durations, rates, lost reasons, SLA breaches, the window and the dealer
filter) and the ``lianyi leads report`` / ``lianyi leads show`` commands."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from scrm.db import SessionFactory, write_transaction
from scrm.leads.history import record_event
from scrm.leads.metrics import DurationStats, lead_metrics
from scrm.models import Lead
from scrm.rows import ensure_corp
from tests.leads.action_support import CORP, T0, Network, add_lead, cli_env, seed_network  # noqa: F401

M = timedelta(minutes=1)


async def _shape(factory: SessionFactory, lead_id: int, *, breaches: tuple[str, ...] = (), **fields: Any) -> None:
    async with write_transaction(factory) as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        for name, value in fields.items():
            setattr(lead, name, value)
        for kind in breaches:
            record_event(session, lead, kind, now=T0 + 20 * M)


async def _world(factory: SessionFactory) -> Network:
    net = await seed_network(factory)
    one = await add_lead(factory, "wm1", dealer_id=net.bj, advisor="a1", channel="ad")
    await _shape(factory, one, status="ordered", accepted_at=T0 + 2 * M, contacted_at=T0 + 12 * M)
    two = await add_lead(factory, "wm2", dealer_id=net.bj, advisor="a1", channel="ad")
    await _shape(
        factory, two, status="delivered", accepted_at=T0 + 4 * M, contacted_at=T0 + 34 * M, closed_at=T0 + 99 * M
    )
    three = await add_lead(factory, "wm3", dealer_id=net.bj, advisor="a2", channel="form")
    await _shape(
        factory,
        three,
        status="lost",
        accepted_at=T0 + 10 * M,
        lost_reason="budget",
        closed_at=T0 + 99 * M,
        breaches=("sla_remind", "sla_manager", "sla_remind"),
    )
    four = await add_lead(factory, "wm4", dealer_id=net.sh, advisor="s1", channel="ad")
    await _shape(factory, four, breaches=("sla_remind", "sla_reassign"))
    five = await add_lead(factory, "wm5", dealer_id=None, status="pool", channel="")
    await _shape(factory, five, breaches=("sla_pool",))
    old = await add_lead(factory, "wm6", dealer_id=net.bj, at=T0 - timedelta(days=40))  # outside the window
    await _shape(
        factory, old, status="lost", lost_reason="fake", accepted_at=T0 - timedelta(days=40) + M, breaches=("sla_pool",)
    )
    async with write_transaction(factory) as session:  # another corp's lead
        await ensure_corp(session, "wwother")
        session.add(Lead(corp_id="wwother", external_userid="wm1", status="lost", lost_reason="fake", created_at=T0))
    return net


async def test_metrics_of_a_window(session_factory: SessionFactory) -> None:
    await _world(session_factory)
    async with session_factory() as session:
        metrics = await lead_metrics(session, CORP, since=T0 - timedelta(days=1), until=T0 + timedelta(days=1))
    assert metrics.leads == 5
    assert metrics.by_status == {"assigned": 1, "delivered": 1, "lost": 1, "ordered": 1, "pool": 1}
    assert metrics.time_to_accept == DurationStats(3, 4.0, 8.8)  # 2, 4, 10 minutes
    assert metrics.time_to_contact == DurationStats(2, 20.0, 28.0)  # 10, 30 minutes
    dealers = [(g.key, g.name, g.leads, g.converted, g.lost, g.conversion, g.lost_rate) for g in metrics.by_dealer]
    assert dealers == [
        ("", "公海（无门店）", 1, 0, 0, 0.0, 0.0),
        ("BJ001", "北京一店", 3, 2, 1, 0.6667, 0.3333),
        ("SH001", "上海一店", 1, 0, 0, 0.0, 0.0),
    ]
    assert [(g.key, g.leads, g.converted, g.lost) for g in metrics.by_advisor] == [
        ("", 1, 0, 0),
        ("a1", 2, 2, 0),
        ("a2", 1, 0, 1),
        ("s1", 1, 0, 0),
    ]
    assert [(g.key, g.leads, g.converted, g.lost) for g in metrics.by_channel] == [
        ("", 1, 0, 0),
        ("ad", 3, 2, 0),
        ("form", 1, 0, 1),
    ]
    assert metrics.lost_by_reason == {"budget": 1}
    assert metrics.sla_breaches == 3
    assert metrics.sla_breaches_by_kind == {"sla_manager": 1, "sla_pool": 1, "sla_reassign": 1, "sla_remind": 2}
    encoded = json.loads(json.dumps(metrics.as_json()))
    assert encoded["by_dealer"][1]["conversion"] == 0.6667
    assert encoded["time_to_accept_minutes"] == {"count": 3, "median": 4.0, "p90": 8.8}


async def test_metrics_of_one_dealer_and_an_empty_window(session_factory: SessionFactory) -> None:
    net = await _world(session_factory)
    async with session_factory() as session:
        shanghai = await lead_metrics(
            session, CORP, since=T0 - timedelta(days=1), until=T0 + timedelta(days=1), dealer_id=net.sh
        )
        empty = await lead_metrics(session, CORP, since=T0 + timedelta(days=1), until=T0 + timedelta(days=2))
        old = await lead_metrics(session, CORP, since=T0 - timedelta(days=41), until=T0 - timedelta(days=39))
    assert (shanghai.leads, shanghai.by_status, shanghai.sla_breaches) == (1, {"assigned": 1}, 1)
    assert shanghai.time_to_accept == DurationStats(0, None, None)
    assert (empty.leads, empty.by_dealer, empty.lost_by_reason, empty.sla_breaches) == (0, [], {}, 0)
    assert (old.leads, old.lost_by_reason, old.time_to_accept) == (1, {"fake": 1}, DurationStats(1, 1.0, 1.0))


@pytest.mark.usefixtures("cli_env")
async def test_the_report_command(session_factory: SessionFactory) -> None:
    await _world(session_factory)
    window = ["--since", "2026-03-01", "--until", "2026-03-02"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["leads", "report", *window])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("线索报表 2026-03-01 至 2026-03-02：共 5 条线索")
    assert "接单用时：中位数 4.0 分钟，P90 8.8 分钟（3 条）" in text
    assert "BJ001     北京一店        3     2     66.7%   1     33.3%" in text
    assert "预算不足  1" in text
    assert "超时（SLA 升级）线索：3 条" in text
    as_json = await asyncio.to_thread(
        CliRunner().invoke, cli, ["leads", "report", *window, "--dealer", "SH001", "--json"]
    )
    assert json.loads(as_json.output)["by_status"] == {"assigned": 1}
    for args, message in (
        (["--dealer", "XX9"], "门店代码 XX9 不存在"),
        (["--since", "2026/03/01"], "日期格式应为 YYYY-MM-DD，例如 2026-03-01"),
        (["--since", "2026-03-05", "--until", "2026-03-01"], "开始日期 2026-03-05 晚于结束日期 2026-03-01"),
    ):
        refused = await asyncio.to_thread(CliRunner().invoke, cli, ["leads", "report", *args])
        assert (refused.exit_code, refused.stderr.strip()) == (1, message)


@pytest.mark.usefixtures("cli_env")
async def test_the_show_command(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj)
    await _shape(session_factory, lead_id, lost_reason="budget", lost_note="首付不够", breaches=("sla_remind",))
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["leads", "show", str(lead_id)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"线索 {lead_id}：客户 wmA，H 级 88 分，状态「待接单」，门店 北京一店（BJ001），顾问 a1"
    assert lines[1] == "战败原因：预算不足（首付不够）"
    assert "2026-03-02 10:00:00  分配给顾问    公海 → 待接单  system" in result.output
    assert "2026-03-02 10:20:00  超时提醒顾问                 system" in result.output
    missing = await asyncio.to_thread(CliRunner().invoke, cli, ["leads", "show", "999999"])
    assert (missing.exit_code, missing.stderr.strip()) == (1, "线索 999999 不存在")
