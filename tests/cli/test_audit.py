"""``lianyi audit list``: newest first, filtered by user, day (China time) and action prefix, as a table or JSON,
readable by admins only."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner, Result

from bot.cli import cli
from scrm import audit
from scrm.db import SessionFactory, transaction
from scrm.models.accounts import UserRole
from tests.users_support import Account, add_accounts

# (actor, action, subject id, when in UTC); 2026-12-01 16:30 UTC is 2026-12-02 00:30 in China
ROWS = (
    ("admin1", "user.created", "op1", datetime(2026, 11, 30, 2, 0, tzinfo=UTC)),
    ("op1", "campaign.created", "spring", datetime(2026, 12, 1, 15, 59, tzinfo=UTC)),
    ("op1", "campaign.cancelled", "spring", datetime(2026, 12, 1, 16, 30, tzinfo=UTC)),
    ("mgr1", "campaign.approved", "autumn", datetime(2026, 12, 3, 8, 0, tzinfo=UTC)),
    ("system", "contact.deleted_by_staff", "wm_1", datetime(2026, 12, 4, 8, 0, tzinfo=UTC)),
    ("op1", "campaign_x.weird%", "x", datetime(2026, 12, 5, 8, 0, tzinfo=UTC)),
)


@pytest.fixture
def runner(database_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LIANYI_DATABASE_URL", database_url)
    return CliRunner()


@pytest.fixture
async def logged(session_factory: SessionFactory) -> None:
    await add_accounts(
        session_factory,
        (
            Account("admin1", UserRole.ADMIN),
            Account("op1", UserRole.OPERATOR),
            Account("gone", UserRole.ADMIN, active=False),
        ),
    )
    async with transaction(session_factory) as session:
        for actor, action, subject, at in ROWS:
            entry = await audit.record_change(
                session, "", action, "thing", subject, actor=actor, before=None, after={"n": subject}
            )
            entry.created_at = at


async def audit_cli(runner: CliRunner, *args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, cli, ["audit", "list", *args])


async def listed(runner: CliRunner, *args: str) -> list[tuple[str, str, str]]:
    result = await audit_cli(runner, *args, "--json", "--as", "admin1")
    assert result.exit_code == 0, result.output
    return [(e["actor"], e["action"], e["subject_id"]) for e in json.loads(result.output)]


@pytest.mark.usefixtures("logged")
async def test_filters_newest_first(runner: CliRunner) -> None:
    everything = await listed(runner)
    assert everything == [(a, b, c) for a, b, c, _ in reversed(ROWS)]
    assert await listed(runner, "--user", "op1") == [
        ("op1", "campaign_x.weird%", "x"),
        ("op1", "campaign.cancelled", "spring"),
        ("op1", "campaign.created", "spring"),
    ]
    assert [a for _, a, _ in await listed(runner, "--action", "campaign.")] == [
        "campaign.approved",
        "campaign.cancelled",
        "campaign.created",
    ]  # a prefix, matched literally: "campaign_x" is not "campaign." with a wildcard
    assert [a for _, a, _ in await listed(runner, "--action", "campaign_")] == ["campaign_x.weird%"]
    assert [s for _, _, s in await listed(runner, "--since", "2026-12-02")] == ["x", "wm_1", "autumn", "spring"]
    assert await listed(runner, "--since", "2026-12-02", "--user", "op1", "--action", "campaign.", "--limit", "1") == [
        ("op1", "campaign.cancelled", "spring")
    ]
    assert await listed(runner, "--user", "nobody") == []


@pytest.mark.usefixtures("logged")
async def test_table_and_json_carry_the_digests(runner: CliRunner) -> None:
    table = await audit_cli(runner, "--limit", "2", "--as", "admin1")
    lines = table.output.splitlines()
    assert lines[0].split() == ["时间", "操作人", "操作", "对象", "详情"]
    assert lines[2].split()[:5] == ["2026-12-05", "16:00:00", "op1", "campaign_x.weird%", "thing:x"]
    assert len(lines) == 4
    [entry] = json.loads((await audit_cli(runner, "--limit", "1", "--json", "--as", "admin1")).output)
    assert entry["at"] == "2026-12-05T08:00:00+00:00"
    assert entry["detail"] == {"before_sha256": None, "after_sha256": audit.canonical_digest({"n": "x"})}
    assert (await audit_cli(runner, "--user", "nobody", "--as", "admin1")).output.strip() == "没有符合条件的审计记录"


@pytest.mark.usefixtures("logged")
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--as", "op1"), 1, "用户 op1（运营）无权执行此操作（audit.read）"),
        (("--as", "gone"), 1, "用户 gone 已停用"),
        (("--as", "ghost"), 1, "没有用户 ghost（先用 lianyi user add 创建）"),
        (("--since", "12/02/2026", "--as", "admin1"), 2, "日期格式应为 YYYY-MM-DD：12/02/2026"),
        ((), 2, "Missing option '--as'"),
    ],
)
async def test_refused(runner: CliRunner, args: tuple[str, ...], code: int, message: str) -> None:
    result = await audit_cli(runner, *args)
    assert result.exit_code == code
    assert message in result.output
    if code == 1:
        assert result.output.strip() == message
