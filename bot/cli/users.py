"""``lianyi user add|list|disable|enable|passwd``: the people who sign in to Lianyi and act on the CLI.

Passwords are never taken from the command line (argv is visible to every user of the machine and lands in
shell history): when standard input is not a terminal its first line is the password, otherwise it is asked
for twice without echo. Advisors get no password (they sign in through WeCom) and must be linked to their
WeCom account with ``--staff``.

The first admin is created without ``--as`` (``lianyi user add admin --role admin``), which works only while
no active admin exists; every other change needs ``--as`` an active admin.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar
from zoneinfo import ZoneInfo

import click
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.cli.database import check_database, fail, require_database
from bot.cli.identity import as_option
from bot.cli.text_table import table
from bot.settings import load_query_settings
from scrm.accounts.permissions import ROLE_NAMES_ZH
from scrm.accounts.users import NewUser, create_user, list_users, needs_password, set_active, set_password
from scrm.db import make_engine, make_session_factory, transaction
from scrm.db_types import utcnow
from scrm.errors import DomainError, LianyiError
from scrm.models.accounts import User, UserRole

T = TypeVar("T")
SHOWN_ZONE = ZoneInfo("Asia/Shanghai")


def read_password() -> str:
    """The new password: the first line of a piped stdin, or typed twice (hidden) at a terminal."""
    if sys.stdin.isatty():
        return str(click.prompt("密码", hide_input=True, confirmation_prompt="再次输入密码"))
    line = sys.stdin.readline()
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        fail("没有从标准输入读到密码（第一行即密码）")
    return password


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``work`` in one transaction on the configured, migrated database; a refusal is one line, exit 1."""
    url = load_query_settings().database_url
    require_database(url)

    async def run() -> T:
        engine = make_engine(url)
        try:
            async with transaction(make_session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        fail(str(exc))


@click.group("user")
def user() -> None:
    """Users who sign in to Lianyi and act on the CLI (用户与角色)."""


@user.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice([r.value for r in UserRole]), help="What the user may do.")
@click.option("--dealer", "dealer_code", default="", help="Dealer code (managers and advisors only, required).")
@click.option("--staff", "staff_userid", default="", help="Linked WeCom userid (required for advisors).")
@click.option("--name", "display_name", default="", help="Display name (显示名).")
@click.option("--as", "actor", default=None, metavar="USERNAME", help="An active admin (not needed for the first one).")
def add_command(
    username: str, role: str, dealer_code: str, staff_userid: str, display_name: str, actor: str | None
) -> None:
    """Add a user; the password comes from stdin or a hidden prompt, never from the command line (新增用户)."""
    password = read_password() if needs_password(role) else None
    new = NewUser(username, role, dealer_code, staff_userid, display_name, password)

    async def work(session: AsyncSession) -> User:
        return await create_user(session, new, actor=actor, now=utcnow())

    created = _in_transaction(work)
    click.echo(f"已创建用户 {created.username}（{ROLE_NAMES_ZH[UserRole(created.role)]}）")


def _shown(user_row: User) -> tuple[str, ...]:
    last = user_row.last_login_at.astimezone(SHOWN_ZONE).strftime("%Y-%m-%d %H:%M") if user_row.last_login_at else "-"
    role = (
        ROLE_NAMES_ZH.get(UserRole(user_row.role), user_row.role) if user_row.role in set(UserRole) else user_row.role
    )
    return (
        user_row.username,
        user_row.display_name or "-",
        role,
        user_row.dealer_code or "-",
        user_row.staff_userid or "-",
        "有效" if user_row.active else "已停用",
        last,
    )


@user.command("list")
def list_command() -> None:
    """Every user with role, dealer, WeCom account, status and last sign-in (用户列表)."""
    url = load_query_settings().database_url

    async def run() -> list[User]:
        await check_database(url)
        engine = make_engine(url)
        try:
            async with make_session_factory(engine)() as session:
                return await list_users(session)
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(run())
    except LianyiError as exc:
        fail(str(exc))
    headers = ["用户名", "姓名", "角色", "经销商", "企业微信账号", "状态", "最近登录"]
    click.echo(
        table(headers, [_shown(u) for u in rows]) if rows else "还没有用户（lianyi user add USERNAME --role admin）"
    )


def _switch(active: bool) -> Callable[[str, str], None]:
    def command(username: str, actor: str) -> None:
        async def work(session: AsyncSession) -> bool:
            return await set_active(session, username, active, actor=actor)

        changed = _in_transaction(work)
        state = "启用" if active else "停用"
        click.echo(f"已{state}用户 {username}" if changed else f"用户 {username} 本来就已{state}，未作改动")

    return command


@user.command("disable")
@click.argument("username")
@as_option("an admin")
def disable_command(username: str, actor: str) -> None:
    """Disable a user: no more sign-ins, sessions or --as (停用用户)."""
    _switch(False)(username, actor)


@user.command("enable")
@click.argument("username")
@as_option("an admin")
def enable_command(username: str, actor: str) -> None:
    """Enable a disabled user again (启用用户)."""
    _switch(True)(username, actor)


@user.command("passwd")
@click.argument("username")
@as_option("an admin")
def passwd_command(username: str, actor: str) -> None:
    """Set a user's password from stdin or a hidden prompt (设置密码; not for advisors)."""
    password = read_password()

    async def work(session: AsyncSession) -> None:
        await set_password(session, username, password, actor=actor)

    _in_transaction(work)
    click.echo(f"已设置用户 {username} 的密码")
