"""``lianyi campaign …`` as an operator uses it: check, save, approve, plan, send, report (text, JSON, CSV), cancel.

The commands run their own event loop, so the tests invoke them in a thread. Sending is planned by the command;
the WeCom tasks would be created by `lianyi serve` (not running here), so `send --no-follow` is used."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert
from sqlmodel import select

from bot.cli import cli
from scrm.db import SessionFactory, transaction
from scrm.db_types import utcnow
from scrm.models import (
    AuditLog,
    Campaign,
    CampaignBatch,
    CampaignRun,
    CommandStatus,
    CustomerGroup,
    Dealer,
    OutboxCommand,
    Staff,
)
from scrm.models.accounts import UserRole
from scrm.rows import ensure_corp
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.users_support import Account, add_accounts

DOCS = Path(__file__).resolve().parents[2] / "docs" / "campaigns"
CAMPAIGN = """\
code: cli_push
name: 命令行测试
chat_type: group
audience: {dealer: [BJ001]}
content:
  text: "{{ group.name }}：{{ dealer.name }}本周六试驾日"
schedule: {now: true}
approval: true
"""


@pytest.fixture
def runner(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    sop = tmp_path / "sop"
    sop.mkdir()
    (sop / "policy.yaml").write_text('quiet_hours: {start: "00:00", end: "00:00"}\n', encoding="utf-8")
    for name, value in {
        "CORP_ID": TEST_CORP_ID,
        "CALLBACK_TOKEN": TEST_TOKEN,
        "CALLBACK_AES_KEY": TEST_AES_KEY,
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "SOP_DIR": str(sop),
        "LOG_JSON": "false",
        "LOG_LEVEL": "ERROR",
    }.items():
        monkeypatch.setenv("LIANYI_" + name, value)
    return CliRunner()


async def run(runner: CliRunner, *args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, cli, ["campaign", *args])


async def seed(sessions: SessionFactory) -> None:
    async with transaction(sessions) as session:
        await ensure_corp(session, TEST_CORP_ID)
        dealer = Dealer(corp_id=TEST_CORP_ID, code="BJ001", name="北京望京4S店")
        session.add(dealer)
        await session.flush()
        for userid, role in (("op1", "operator"), ("op2", "operator"), ("adv1", "advisor")):
            session.add(Staff(corp_id=TEST_CORP_ID, userid=userid, role=role, dealer_id=dealer.id))
        groups = [
            {
                "corp_id": TEST_CORP_ID,
                "chat_id": f"wrCli{n}",
                "name": f"望京车友{n}群",
                "owner_userid": "adv1",
                "dealer_id": dealer.id,
                "status": "active",
                "member_count": 20,
                "member_version": "",
                "notice": "",
                "updated_at": utcnow(),
            }
            for n in range(3)
        ]
        conn = await session.connection()
        await conn.execute(insert(CustomerGroup.__table__), groups)  # type: ignore[attr-defined]
    await add_accounts(
        sessions,
        (
            Account("op1", UserRole.OPERATOR),
            Account("op2", UserRole.OPERATOR),
            Account("op_gone", UserRole.OPERATOR, active=False),
            Account("mgr1", UserRole.MANAGER, dealer_code="BJ001"),
            Account("adv1", UserRole.ADVISOR, dealer_code="BJ001", staff_userid="adv1"),
        ),
    )


async def test_shipped_examples_pass_the_check(runner: CliRunner) -> None:
    result = await run(runner, "check", *sorted(str(p) for p in DOCS.glob("*.yaml")))
    assert result.exit_code == 0, result.output
    assert "检查通过" in result.output


async def test_a_broken_file_is_refused_with_its_position(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAMPAIGN.replace("schedule: {now: true}", "schedule: {now: true, cron: '0 9 * * *'}"), "utf-8")
    result = await run(runner, "check", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:7:" in result.output and "schedule 需要且只能有 now、at、cron 之一" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(CAMPAIGN.replace("{{ group.name }}", "{{ group.name "), "utf-8")
    result = await run(runner, "save", str(broken), "--as", "op1")
    assert result.exit_code == 1 and "content" in result.output


async def test_save_approve_send_report_cancel(
    runner: CliRunner, tmp_path: Path, session_factory: SessionFactory
) -> None:
    await seed(session_factory)
    file = tmp_path / "cli_push.yaml"
    file.write_text(CAMPAIGN, encoding="utf-8")
    saved = await run(runner, "save", str(file), "--as", "op1")
    assert saved.output.strip() == "群发活动 cli_push 已创建，状态：待审批"
    assert (await run(runner, "save", str(file), "--as", "op1")).output.strip().endswith("没有变化，状态：待审批")
    refused = await run(runner, "send", "cli_push", "--no-follow")
    assert refused.exit_code == 1 and "现在没有需要发送的批次（状态：待审批" in refused.output
    own = await run(runner, "approve", "cli_push", "--as", "op1")
    assert own.exit_code == 1 and "创建人不能审批" in own.output
    assert (await run(runner, "approve", "cli_push", "--as", "op2")).output.strip() == "群发活动 cli_push 已审批通过"

    preview = await run(runner, "plan", "cli_push")
    assert "目标 3，计划发送 3，跳过 0" in preview.output and "群发任务 3 个（1 位发送成员）" in preview.output
    async with session_factory() as session:
        assert (await session.exec(select(CampaignRun))).all() == []  # the preview wrote nothing

    sent = await run(runner, "send", "cli_push", "--no-follow")
    assert sent.exit_code == 0, sent.output
    assert "已规划：目标 3，跳过 0，群发任务 3" in sent.output
    async with session_factory() as session:
        batches = (await session.exec(select(CampaignBatch))).all()
        commands = (await session.exec(select(OutboxCommand))).all()
    assert sorted(b.key for b in batches) == sorted(c.idempotency_key for c in commands)
    assert {c.status for c in commands} == {CommandStatus.PENDING.value}

    report = await run(runner, "report", "cli_push")
    assert "目标 3，计划发送 3，跳过 0" in report.output and "群发任务 3：已创建 0" in report.output
    as_json = json.loads((await run(runner, "report", "cli_push", "--json")).output)
    assert as_json["runs"][0]["planned"] == 3 and as_json["runs"][0]["results"] == {"planned": 3}
    out = tmp_path / "targets.csv"
    await run(runner, "report", "cli_push", "--csv", str(out))
    text = out.read_text(encoding="utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(text[1:].splitlines()))
    assert rows[0][:4] == ["活动编码", "批次时间", "目标类型", "目标ID"]
    assert sorted(r[3] for r in rows[1:]) == ["wrCli0", "wrCli1", "wrCli2"]
    assert {r[8] for r in rows[1:]} == {"待发送"}

    cancelled = await run(runner, "cancel", "cli_push", "--as", "op2")
    assert "已取消（3 个尚未创建的群发任务已撤回" in cancelled.output
    async with session_factory() as session:
        assert {c.status for c in (await session.exec(select(OutboxCommand))).all()} == {CommandStatus.FAILED.value}
    listing = await run(runner, "list")
    assert "cli_push" in listing.output and "已取消" in listing.output


async def audit_rows(sessions: SessionFactory) -> list[tuple[str, str]]:
    async with sessions() as session:
        rows = (await session.exec(select(AuditLog).where(AuditLog.subject_type == "campaign"))).all()
    return sorted((r.action, r.actor) for r in rows)


async def test_identities_are_real_users_attack_3_replayed(
    runner: CliRunner, tmp_path: Path, session_factory: SessionFactory
) -> None:
    """Issue 13, attack 3: a name that is no user, the author approving, anybody cancelling: all refused."""
    await seed(session_factory)
    file = tmp_path / "cli_push.yaml"
    file.write_text(CAMPAIGN, encoding="utf-8")
    ghost = await run(runner, "save", str(file), "--as", "ghost_user_not_in_roster")
    assert (ghost.exit_code, ghost.output.strip()) == (
        1,
        "没有用户 ghost_user_not_in_roster（先用 lianyi user add 创建）",
    )
    gone = await run(runner, "save", str(file), "--as", "op_gone")
    assert (gone.exit_code, gone.output.strip()) == (1, "用户 op_gone 已停用")
    advisor = await run(runner, "save", str(file), "--as", "adv1")
    assert advisor.exit_code == 1 and advisor.output.strip() == "用户 adv1（销售顾问）无权执行此操作（campaign.edit）"
    async with session_factory() as session:
        assert (await session.exec(select(Campaign))).all() == []
    assert await audit_rows(session_factory) == []

    assert (await run(runner, "save", str(file), "--as", "op1")).exit_code == 0
    own = await run(runner, "approve", "cli_push", "--as", "op1")
    assert own.exit_code == 1 and "创建人不能审批" in own.output
    own_reject = await run(runner, "reject", "cli_push", "--as", "op1", "--reason", "自己驳回")
    assert own_reject.exit_code == 1 and "创建人不能驳回" in own_reject.output
    nobody = await run(runner, "cancel", "cli_push", "--as", "nobody")
    assert (nobody.exit_code, nobody.output.strip()) == (1, "没有用户 nobody（先用 lianyi user add 创建）")
    async with session_factory() as session:
        campaign = (await session.exec(select(Campaign))).one()
    assert (campaign.status, campaign.approved_by, campaign.cancelled_by) == ("pending_approval", "", "")
    assert await audit_rows(session_factory) == [("campaign.created", "op1")]

    approved = await run(runner, "approve", "cli_push", "--as", "mgr1")
    assert approved.exit_code == 0, approved.output
    assert await audit_rows(session_factory) == [("campaign.approved", "mgr1"), ("campaign.created", "op1")]


async def test_by_is_gone(runner: CliRunner, tmp_path: Path) -> None:
    file = tmp_path / "cli_push.yaml"
    file.write_text(CAMPAIGN, encoding="utf-8")
    for args in (("save", str(file), "--by", "op1"), ("approve", "cli_push", "--by", "op2")):
        result = await run(runner, *args)
        assert result.exit_code == 2 and "No such option '--by'" in result.output
