"""``lianyi user add|list|disable|enable|passwd`` as an administrator uses it, on SQLite and PostgreSQL.

Passwords come from stdin (CliRunner's input is not a terminal), never from the command line. The commands run
their own event loop, so the tests invoke them in a thread."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from pathlib import Path
from select import select as wait_readable

import pytest
from click.testing import CliRunner, Result
from sqlmodel import col, select

from bot.cli import cli
from scrm.accounts.passwords import verify_password
from scrm.audit import canonical_digest
from scrm.db import SessionFactory, transaction
from scrm.models import AuditLog, Dealer, Staff
from scrm.models.accounts import User
from scrm.rows import ensure_corp
from tests.conftest import TEST_CORP_ID

PASSWORD = "correct-horse-42"
LIANYI = Path(sys.executable).with_name("lianyi")


@pytest.fixture
def runner(database_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("CORP_ID", "CALLBACK_TOKEN", "CALLBACK_AES_KEY"):
        monkeypatch.delenv("LIANYI_" + name, raising=False)
    monkeypatch.setenv("LIANYI_DATABASE_URL", database_url)
    return CliRunner()


async def user_cli(runner: CliRunner, *args: str, stdin: str | None = None) -> Result:
    return await asyncio.to_thread(runner.invoke, cli, ["user", *args], input=stdin)


async def seed_dealer(sessions: SessionFactory) -> None:
    """Dealer BJ001 with two WeCom members, for managers and advisors."""
    async with transaction(sessions) as session:
        await ensure_corp(session, TEST_CORP_ID)
        dealer = Dealer(corp_id=TEST_CORP_ID, code="BJ001", name="北京望京4S店")
        session.add(dealer)
        await session.flush()
        for userid in ("liqiang", "zhangwei"):
            session.add(Staff(corp_id=TEST_CORP_ID, userid=userid, dealer_id=dealer.id))


async def users(sessions: SessionFactory) -> dict[str, User]:
    async with sessions() as session:
        return {u.username: u for u in (await session.exec(select(User))).all()}


async def audit_rows(sessions: SessionFactory) -> list[AuditLog]:
    async with sessions() as session:
        return list((await session.exec(select(AuditLog).order_by(col(AuditLog.id)))).all())


async def bootstrap(runner: CliRunner) -> None:
    created = await user_cli(runner, "add", "admin", "--role", "admin", stdin=PASSWORD + "\n")
    assert (created.exit_code, created.output.strip()) == (0, "已创建用户 admin（管理员）")


async def test_the_first_admin_needs_no_as_and_only_once(runner: CliRunner, session_factory: SessionFactory) -> None:
    await bootstrap(runner)
    stored = (await users(session_factory))["admin"]
    assert verify_password(stored.password_hash, PASSWORD) and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    [row] = await audit_rows(session_factory)
    assert (row.action, row.actor, row.subject_id, row.corp_id) == ("user.created", "admin", "admin", "")
    detail = row.detail or {}
    assert detail["before_sha256"] is None
    assert detail["after_sha256"] == canonical_digest(stored.model_dump())
    assert PASSWORD not in str(detail) and stored.password_hash not in str(detail)

    second = await user_cli(runner, "add", "root2", "--role", "admin", stdin=PASSWORD + "\n")
    assert second.exit_code == 1
    assert second.output.strip().endswith(
        "需要用 --as 指定一位有效的管理员（只有在还没有有效管理员时，才能不带 --as 创建第一个管理员）"
    )
    operator = await user_cli(runner, "add", "op1", "--role", "operator", stdin=PASSWORD + "\n")
    assert operator.exit_code == 1
    assert set(await users(session_factory)) == {"admin"}
    with_as = await user_cli(runner, "add", "root2", "--role", "admin", "--as", "admin", stdin=PASSWORD + "\n")
    assert with_as.exit_code == 0, with_as.output
    assert [(r.action, r.actor, r.subject_id) for r in await audit_rows(session_factory)] == [
        ("user.created", "admin", "admin"),
        ("user.created", "admin", "root2"),
    ]


async def test_the_password_never_comes_from_the_command_line(
    runner: CliRunner, session_factory: SessionFactory
) -> None:
    as_option = await user_cli(runner, "add", "admin", "--role", "admin", "--password", PASSWORD)
    assert as_option.exit_code == 2 and "No such option '--password'" in as_option.output
    as_argument = await user_cli(runner, "add", "admin", PASSWORD, "--role", "admin")
    assert as_argument.exit_code == 2 and "Got unexpected extra argument" in as_argument.output
    empty = await user_cli(runner, "add", "admin", "--role", "admin", stdin="")
    assert (empty.exit_code, empty.output.strip()) == (1, "没有从标准输入读到密码（第一行即密码）")
    weak = await user_cli(runner, "add", "admin", "--role", "admin", stdin="short\n")
    assert (weak.exit_code, weak.output.strip()) == (1, "密码至少 10 个字符")
    assert await users(session_factory) == {}
    assert await audit_rows(session_factory) == []
    # only the first line is the password (a trailing CR of a Windows file is not part of it)
    await user_cli(runner, "add", "admin", "--role", "admin", stdin=PASSWORD + "\r\nsecond line\n")
    assert verify_password((await users(session_factory))["admin"].password_hash, PASSWORD)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Bad Name", "--role", "operator"), "用户名只能由 2–64 个小写字母、数字、下划线、点或连字符组成"),
        (("m1", "--role", "manager"), "经销商经理需要用 --dealer 指定所属门店代码"),
        (
            ("m1", "--role", "manager", "--dealer", "XX999"),
            "门店代码 XX999 不存在（先用 lianyi roster import 导入门店）",
        ),
        (("o1", "--role", "operator", "--dealer", "BJ001"), "运营不属于某个门店，不能指定 --dealer"),
        (
            ("a1", "--role", "advisor", "--dealer", "BJ001"),
            "销售顾问通过企业微信登录，需要用 --staff 指定其企业微信账号",
        ),
        (
            ("a1", "--role", "advisor", "--dealer", "BJ001", "--staff", "nobody"),
            "成员 nobody 不存在（先运行 lianyi sync 或 lianyi roster import）",
        ),
        (("admin", "--role", "operator"), "用户 admin 已存在"),
    ],
)
async def test_bad_input_is_one_line_and_changes_nothing(
    runner: CliRunner, session_factory: SessionFactory, args: tuple[str, ...], message: str
) -> None:
    await seed_dealer(session_factory)
    await bootstrap(runner)
    stdin = None if "advisor" in args else PASSWORD + "\n"
    refused = await user_cli(runner, "add", *args, "--as", "admin", stdin=stdin)
    assert (refused.exit_code, refused.output.strip()) == (1, message)
    assert set(await users(session_factory)) == {"admin"}
    assert len(await audit_rows(session_factory)) == 1


async def test_managers_and_advisors_belong_to_a_dealer_and_a_member(
    runner: CliRunner, session_factory: SessionFactory
) -> None:
    await seed_dealer(session_factory)
    await bootstrap(runner)
    manager = await user_cli(
        runner, "add", "liqiang", "--role", "manager", "--dealer", "BJ001", "--staff", "liqiang", "--name", "李强",
        "--as", "admin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert manager.exit_code == 0, manager.output
    advisor = await user_cli(
        runner, "add", "zhangwei", "--role", "advisor", "--dealer", "BJ001", "--staff", "zhangwei", "--as", "admin"
    )  # an advisor reads no password: nothing on stdin
    assert (advisor.exit_code, advisor.output.strip()) == (0, "已创建用户 zhangwei（销售顾问）")
    taken = await user_cli(
        runner, "add", "zw2", "--role", "advisor", "--dealer", "BJ001", "--staff", "zhangwei", "--as", "admin"
    )
    assert (taken.exit_code, taken.output.strip()) == (1, "成员 zhangwei 已关联用户 zhangwei")
    stored = await users(session_factory)
    assert stored["zhangwei"].password_hash == "" and stored["zhangwei"].dealer_code == "BJ001"
    assert (stored["liqiang"].display_name, stored["liqiang"].staff_userid) == ("李强", "liqiang")
    no_password = await user_cli(runner, "passwd", "zhangwei", "--as", "admin", stdin=PASSWORD + "\n")
    assert (no_password.exit_code, no_password.output.strip()) == (1, "销售顾问通过企业微信登录，不设置密码")

    listing = await user_cli(runner, "list")
    lines = listing.output.splitlines()
    assert lines[0].split() == ["用户名", "姓名", "角色", "经销商", "企业微信账号", "状态", "最近登录"]
    assert lines[3].split() == ["liqiang", "李强", "经销商经理", "BJ001", "liqiang", "有效", "-"]


async def test_a_manager_cannot_administer_users(runner: CliRunner, session_factory: SessionFactory) -> None:
    await seed_dealer(session_factory)
    await bootstrap(runner)
    await user_cli(runner, "add", "mgr", "--role", "manager", "--dealer", "BJ001", "--as", "admin", stdin=PASSWORD)
    refusal = "用户 mgr（经销商经理）无权执行此操作（user.admin）"
    for args, stdin in (
        (("add", "op9", "--role", "operator", "--as", "mgr"), PASSWORD),
        (("disable", "admin", "--as", "mgr"), None),
        (("passwd", "admin", "--as", "mgr"), "another-password-1"),
    ):
        refused = await user_cli(runner, *args, stdin=stdin)
        assert (refused.exit_code, refused.output.strip()) == (1, refusal)
    stored = await users(session_factory)
    assert set(stored) == {"admin", "mgr"} and stored["admin"].active
    assert verify_password(stored["admin"].password_hash, PASSWORD)


async def test_disable_enable_and_passwd(runner: CliRunner, session_factory: SessionFactory) -> None:
    await bootstrap(runner)
    await user_cli(runner, "add", "ops", "--role", "admin", "--as", "admin", stdin=PASSWORD)
    assert (await user_cli(runner, "disable", "admin", "--as", "admin")).output.strip() == "不能停用自己"
    disabled = await user_cli(runner, "disable", "ops", "--as", "admin")
    assert (disabled.exit_code, disabled.output.strip()) == (0, "已停用用户 ops")
    again = await user_cli(runner, "disable", "ops", "--as", "admin")
    assert again.output.strip() == "用户 ops 本来就已停用，未作改动"
    refused = await user_cli(runner, "passwd", "admin", "--as", "ops", stdin="new-password-123")
    assert (refused.exit_code, refused.output.strip()) == (1, "用户 ops 已停用")
    assert "已停用" in (await user_cli(runner, "list")).output
    assert (await user_cli(runner, "enable", "ops", "--as", "admin")).output.strip() == "已启用用户 ops"
    changed = await user_cli(runner, "passwd", "admin", "--as", "ops", stdin="new-password-123\n")
    assert (changed.exit_code, changed.output.strip()) == (0, "已设置用户 admin 的密码")
    assert verify_password((await users(session_factory))["admin"].password_hash, "new-password-123")
    unknown = await user_cli(runner, "enable", "ghost", "--as", "admin")
    assert (unknown.exit_code, unknown.output.strip()) == (1, "没有用户 ghost")
    rows = await audit_rows(session_factory)
    assert [(r.action, r.actor, r.subject_id) for r in rows] == [
        ("user.created", "admin", "admin"),
        ("user.created", "admin", "ops"),
        ("user.disabled", "admin", "ops"),
        ("user.enabled", "admin", "ops"),
        ("user.password_changed", "ops", "admin"),
    ]
    disabled_row, enabled_row = (r.detail or {} for r in rows[2:4])
    assert disabled_row["after_sha256"] == enabled_row["before_sha256"] != enabled_row["after_sha256"]
    assert "new-password-123" not in str([r.detail for r in rows])


async def test_a_bootstrap_is_possible_again_only_when_no_admin_is_active(
    runner: CliRunner, session_factory: SessionFactory
) -> None:
    """The bootstrap's rule is "no active admin": all admins disabled (by hand in the database) reopens it."""
    await bootstrap(runner)
    async with transaction(session_factory) as session:
        admin = (await session.exec(select(User).where(User.username == "admin"))).one()
        admin.active = False
        session.add(admin)
    recovered = await user_cli(runner, "add", "admin2", "--role", "admin", stdin=PASSWORD)
    assert recovered.exit_code == 0, recovered.output
    operator = await user_cli(runner, "add", "op1", "--role", "operator", stdin=PASSWORD)
    assert operator.exit_code == 1  # the bootstrap makes admins only


def type_at_a_terminal(database_url: str, answers: list[tuple[str, str]]) -> tuple[int, str]:
    """``lianyi user add admin --role admin`` with a pseudo-terminal as stdin: each answer is typed once its prompt
    appeared (getpass flushes what was typed ahead). Returns the exit code and everything the terminal showed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env["LIANYI_DATABASE_URL"] = database_url
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(LIANYI), "user", "add", "admin", "--role", "admin"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,  # no controlling terminal: getpass turns echo off on stdin, the pseudo-terminal
    )
    os.close(follower)
    shown = b""
    pending = list(answers)
    try:
        while True:
            ready, _, _ = wait_readable([leader], [], [], 60)
            if not ready:
                raise TimeoutError(f"no prompt within 60 s; the terminal showed {shown.decode(errors='replace')!r}")
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if pending and shown.decode(errors="replace").count(pending[0][0]) >= 1:
                prompt, answer = pending.pop(0)
                shown = shown.replace(prompt.encode(), b"<" + prompt.encode() + b">", 1)  # each prompt answers once
                os.write(leader, answer.encode() + b"\n")
    finally:
        os.close(leader)
        if proc.poll() is None and pending:  # still waiting for a prompt we gave up on
            proc.kill()
    return proc.wait(timeout=60), shown.decode(errors="replace")


async def test_at_a_terminal_the_password_is_asked_twice_without_echo(
    database_url: str, session_factory: SessionFactory
) -> None:
    code, shown = await asyncio.to_thread(
        type_at_a_terminal, database_url, [("密码:", PASSWORD), ("再次输入密码:", PASSWORD)]
    )
    assert code == 0, shown
    assert "<密码:>" in shown and "<再次输入密码:>" in shown and "已创建用户 admin（管理员）" in shown
    assert PASSWORD not in shown  # typed, never echoed
    assert verify_password((await users(session_factory))["admin"].password_hash, PASSWORD)
