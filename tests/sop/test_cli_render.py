"""``lianyi sop render`` and ``lianyi sop dry-run`` against a real migrated SQLite database: output, exit
codes, and not a single row written."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

import bot.cli.sop_run  # noqa: F401  (registers render and dry-run on the sop group)
from bot.cli import cli
from bot.cli.sop import sop
from scrm.db import make_engine, make_session_factory
from tests.conftest import create_sqlite_database
from tests.sop.support import CORP, MONDAY_10AM, add_contact, seed
from tests.sop.test_dryrun import add_group, add_touches, update_contact

NURTURE = """\
id: nurture
name: 新客培育
kind: contact
trigger: {event: contact.added}
steps:
  - id: hello
    immediately: true
    private_message:
      text: "{{ contact.name }}您好，我是{{ dealer.name }}的{{ staff.name }}"
  - id: invite
    after: 1d
    at: "10:00"
    when: contact.stage == "prospect"
    private_message:
      file: msgs/invite.j2
      attachments:
        - link: {title: 预约试驾, url: "https://m.example.com/td?dealer={{ dealer.code }}"}
  - id: owner_only
    after: 2d
    when: contact.stage == "owner"
    private_message: {text: 车主专属}
  - id: tag
    after: 2d
    add_tags: [培育完成]
exit: {stage: [lost]}
"""

BROKEN = """\
id: broken
name: 报价回复
kind: contact
trigger: {event: contact.added}
steps:
  - id: inline
    private_message:
      text: |
        您好
        {{ dealer.answers.price }}
  - id: from_file
    private_message: {file: msgs/price.j2}
"""

FRIDAY = """\
id: friday
name: 周五推送
kind: group
trigger: {cron: "0 18 * * 5"}
audience: {name: "*车友群*"}
steps:
  - id: post
    immediately: true
    group_message: {text: "{{ group.name }}的朋友们，周末愉快"}
"""


@dataclass
class Setup:
    database: Path
    sop_dir: Path
    env: dict[str, str]


async def _seed(url: str) -> None:
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        await seed(factory)
        await add_contact(factory, "wmWang", at=MONDAY_10AM - timedelta(days=40), name="王建国")
        await add_contact(factory, "wmLi", at=MONDAY_10AM - timedelta(days=40), name="李娜")
        await update_contact(factory, "wmLi", stage="lost")
        await add_touches(factory, "wmWang", MONDAY_10AM - timedelta(hours=1), MONDAY_10AM - timedelta(minutes=30))
        await add_group(factory, "wrFans", "望京车友群", 120)
    finally:
        await engine.dispose()


@pytest.fixture
async def setup(tmp_path: Path) -> Setup:
    database = tmp_path / "lianyi.db"
    url = await create_sqlite_database(database)
    await _seed(url)
    sop_dir = tmp_path / "sop"
    (sop_dir / "msgs").mkdir(parents=True)
    (sop_dir / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    (sop_dir / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    (sop_dir / "friday.yaml").write_text(FRIDAY, encoding="utf-8")
    (sop_dir / "tags.yaml").write_text("SOP进度: [培育完成]\n", encoding="utf-8")  # `sop check` passes
    (sop_dir / "msgs" / "invite.j2").write_text("{{ contact.name }}，\n明天来试驾吗？\n", encoding="utf-8")
    (sop_dir / "msgs" / "price.j2").write_text("报价如下：\n{{ dealer.answers.price }}\n", encoding="utf-8")
    env = {"LIANYI_DATABASE_URL": url, "LIANYI_SOP_DIR": str(sop_dir), "LIANYI_CORP_ID": CORP}
    return Setup(database, sop_dir, env)


async def invoke(setup: Setup, *args: str, env: dict[str, str] | None = None) -> Result:
    """The command in a worker thread: its own asyncio.run must not touch the test's event loop."""
    return await asyncio.to_thread(CliRunner().invoke, sop, list(args), env=env or setup.env, catch_exceptions=False)


def row_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}


# ---- render --------------------------------------------------------------------------------------------------


async def test_render_prints_every_step_with_real_data(setup: Setup) -> None:
    before = row_counts(setup.database)
    result = await invoke(setup, "render", "nurture", "--contact", "wmWang", "--at", "2026-03-02T10:00")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "模板：新客培育（nurture" in out
    assert "客户：王建国（wmWang）· 阶段 潜客" in out and "顾问 张三 · 门店 北京示例4S店" in out
    assert "[1/4] hello · 1v1 消息 · 立即 · 预计 2026-03-02 10:00 周一" in out
    assert "王建国您好，我是北京示例4S店的张三" in out
    assert "[2/4] invite · 1v1 消息 · 加入后 1天，之后的 10:00 · 预计 2026-03-03 10:00 周二" in out
    assert '条件 contact.stage == "prospect"：满足' in out
    assert "正文（msgs/invite.j2）：\n    王建国，\n    明天来试驾吗？" in out
    assert "1. 链接「预约试驾」https://m.example.com/td?dealer=BJ001" in out
    assert '条件 contact.stage == "owner"：不满足（这一步会被跳过）' in out
    assert "加标签：培育完成；去标签：无" in out
    assert row_counts(setup.database) == before


async def test_render_one_step_and_template_by_path(setup: Setup) -> None:
    result = await invoke(setup, "render", str(setup.sop_dir / "nurture.yaml"), "--contact", "wmWang", "--step", "tag")
    assert result.exit_code == 0, result.output
    assert "[4/4] tag · 打标签" in result.output
    assert "hello" not in result.output and "王建国您好" not in result.output


async def test_render_a_group_template(setup: Setup) -> None:
    missing = await invoke(setup, "render", "friday")
    assert missing.exit_code == 1 and "群类 SOP，请用 --group" in missing.output
    result = await invoke(setup, "render", "friday", "--group", "wrFans", "--at", "2026-03-06T18:00")
    assert result.exit_code == 0, result.output
    assert "客户群：望京车友群（wrFans）· 群主 张三 · 120 人" in result.output
    assert "望京车友群的朋友们，周末愉快" in result.output


async def test_render_refuses_unknown_contacts_templates_and_steps(setup: Setup) -> None:
    unknown = await invoke(setup, "render", "nurture", "--contact", "wmNobody")
    assert unknown.exit_code == 1
    assert f"找不到客户 wmNobody（企业 {CORP}）" in unknown.output
    typo = await invoke(setup, "render", "nurtre", "--contact", "wmWang")
    assert typo.exit_code == 1 and "找不到模板 nurtre，是不是 nurture？" in typo.output
    step = await invoke(setup, "render", "nurture", "--contact", "wmWang", "--step", "day9")
    assert step.exit_code == 1 and "没有步骤 day9；步骤：hello、invite、owner_only、tag" in step.output


async def test_render_errors_point_at_file_and_line(setup: Setup) -> None:
    result = await invoke(setup, "render", "broken", "--contact", "wmWang")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    yaml_file = str(setup.sop_dir / "broken.yaml")
    message_file = str(setup.sop_dir / "msgs" / "price.j2")
    assert any(line.startswith(f"{yaml_file}:10 SOP011 ") and "price" in line for line in lines), result.output
    assert any(line.startswith(f"{message_file}:2 SOP011 ") and "price" in line for line in lines), result.output
    assert lines[-1] == "渲染失败：2 处"


async def test_a_template_with_problems_is_refused_with_them(setup: Setup) -> None:
    (setup.sop_dir / "typo.yaml").write_text(
        NURTURE.replace("id: nurture", "id: typo").replace("steps:", "stpes:"), encoding="utf-8"
    )
    result = await invoke(setup, "dry-run", "typo")
    assert result.exit_code == 1
    assert f"{setup.sop_dir / 'typo.yaml'}:5:1 SOP002 " in result.output and "steps" in result.output
    assert "模板有问题，无法使用" in result.output


async def test_render_warns_when_the_contact_would_exit(setup: Setup) -> None:
    result = await invoke(setup, "render", "nurture", "--contact", "wmLi")
    assert result.exit_code == 0
    assert "注意：该对象当前满足退出条件（stage:lost），实际不会收到这些步骤" in result.output


# ---- dry-run -------------------------------------------------------------------------------------------------


async def test_dry_run_tables_and_no_rows_written(setup: Setup) -> None:
    before = row_counts(setup.database)
    result = await invoke(setup, "dry-run", "nurture", "--from", "2026-03-02T10:00", "--days", "3")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "SOP 试运行：新客培育（nurture" in out
    assert "时间窗口：2026-03-02 10:00 周一 → 2026-03-05 10:00 周四（3 天，北京时间）" in out
    assert "当前满足退出条件、不会进入：stage:lost × 1" in out
    assert "会进入的对象（1）" in out and "wmWang" in out
    assert "每日消息条数" in out and "03-03 周二" in out
    assert "触达策略冲突（1）" in out and "每日触达上限" in out  # two campaign touches already today
    assert "合计：1 个对象进入，发送 2 条，顺延 1 步，跳过 1 步，冲突 1 项，窗口之后还有 0 步" in out
    assert row_counts(setup.database) == before


async def test_dry_run_json_report(setup: Setup) -> None:
    result = await invoke(setup, "dry-run", "nurture", "--from", "2026-03-02T10:00", "--days", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["template"]["id"] == "nurture"
    assert report["window"] == {"from": "2026-03-02T10:00:00+08:00", "to": "2026-03-05T10:00:00+08:00"}
    assert [e["subject_id"] for e in report["entries"]] == ["wmWang"]
    hello = next(s for s in report["steps"] if s["step_id"] == "hello")
    assert (hello["at"], hello["deferred"]) == ("2026-03-03T09:00:00+08:00", ["cap_day"])
    assert [(c["day"], c["reason"], c["used"], c["limit"]) for c in report["conflicts"]] == [
        ("2026-03-02", "cap_day", 2, 2)
    ]
    assert [d["total"] for d in report["per_day"]] == [0, 2, 0, 0]


async def test_dry_run_unknown_template_and_the_registered_command(setup: Setup) -> None:
    result = await invoke(setup, "dry-run", "nosuch")
    assert result.exit_code == 1 and "找不到模板 nosuch" in result.output
    listed = CliRunner().invoke(cli, ["sop", "--help"], env=setup.env)
    assert listed.exit_code == 0
    assert "render" in listed.output and "dry-run" in listed.output


async def _pg_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            names = (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).all()
            return {n: (await conn.execute(text(f'SELECT count(*) FROM "{n}"'))).scalar_one() for (n,) in names}
    finally:
        await engine.dispose()


async def test_both_commands_read_only_on_postgresql(setup: Setup, pg_url: str) -> None:
    await _seed(pg_url)
    env = {**setup.env, "LIANYI_DATABASE_URL": pg_url}
    before = await _pg_counts(pg_url)
    rendered = await invoke(setup, "render", "nurture", "--contact", "wmWang", env=env)
    assert rendered.exit_code == 0 and "王建国您好" in rendered.output
    dry = await invoke(setup, "dry-run", "nurture", "--from", "2026-03-02T10:00", "--days", "3", "--json", env=env)
    assert [e["subject_id"] for e in json.loads(dry.output)["entries"]] == ["wmWang"]
    assert await _pg_counts(pg_url) == before
