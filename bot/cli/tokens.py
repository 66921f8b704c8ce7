"""``lianyi staff token USERID --as ADMIN [--days 30]``, ``lianyi staff revoke TOKEN_ID --as ADMIN``,
``lianyi staff revoke --user USERID --as ADMIN`` and ``lianyi session revoke-all --as ADMIN``.

Each acts as ``--as``: an existing, active user allowed ``user.admin`` (:func:`scrm.accounts.actors.require_actor`),
and each is audited under that username. A token is issued only to an existing, active staff member, for at most
30 days; the token itself is printed once and never stored (its id is, for revocation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import click
import redis.asyncio as aioredis
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.cli.database import ToolFailure, fail, require_database
from bot.redis_keys import RedisKeys
from bot.settings import Settings, load_settings
from bot.web.auth import issue_staff_token
from bot.web.session_redis import RedisSessionStore
from scrm import audit
from scrm.accounts.actors import ActorRefused, require_actor
from scrm.accounts.permissions import Permission
from scrm.accounts.sessions import SessionStore, SqlSessionStore
from scrm.db import SessionFactory, make_engine, make_session_factory, write_transaction
from scrm.db_types import utcnow
from scrm.leads.staff_tokens import MAX_LIFETIME, TokenRefused, revoke_staff_tokens, revoke_token
from scrm.models import Staff

T = TypeVar("T")
AS_HELP = "Username of an active admin this is done as (执行人，须为有效的管理员账号)."


def _run(settings: Settings, work: Callable[[SessionFactory], Awaitable[T]]) -> T:
    require_database(settings.database_url)

    async def main() -> T:
        engine = make_engine(settings.database_url)
        try:
            return await work(make_session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (ToolFailure, ActorRefused, TokenRefused) as exc:
        fail(getattr(exc, "message_zh", str(exc)))


async def _actor(session: AsyncSession, username: str) -> str:
    return (await require_actor(session, username, Permission.USER_ADMIN)).username


@click.group("staff")
def staff() -> None:
    """Staff members (成员): API tokens for the lead API."""


@staff.command("token")
@click.argument("userid")
@click.option("--as", "as_user", required=True, help=AS_HELP)
@click.option(
    "--days",
    default=MAX_LIFETIME.days,
    show_default=True,
    type=click.IntRange(1, MAX_LIFETIME.days),
    help="Days the token is valid (at most 30).",
)
def token_command(userid: str, as_user: str, days: int) -> None:
    """Print an API token for staff member USERID (成员访问令牌，用于线索接口)."""
    settings = load_settings()

    async def work(factory: SessionFactory) -> tuple[str, str, str]:
        now = utcnow()
        async with write_transaction(factory) as session:
            actor = await _actor(session, as_user)
            statement = select(Staff).where(Staff.corp_id == settings.corp_id, Staff.userid == userid)
            member = (await session.exec(statement)).first()
            if member is None or not member.active:
                raise ToolFailure(f"成员 {userid} 不存在或已停用，请先导入花名册（lianyi roster import）")
            issued = await issue_staff_token(
                settings, session, userid, lifetime=timedelta(days=days), created_by=actor, now=now
            )
            detail = {"token_id": issued.token_id, "expires_at": issued.expires_at.isoformat()}
            await audit.record(session, settings.corp_id, "staff_token.issued", "staff", userid, detail, actor=actor)
        local = issued.expires_at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
        return issued.token, issued.token_id, local

    token, token_id, until = _run(settings, work)
    click.echo(token)
    click.echo(
        f"令牌编号 {token_id}，有效期至 {until}（北京时间）；吊销：lianyi staff revoke {token_id} --as …", err=True
    )


@staff.command("revoke")
@click.argument("token_id", required=False)
@click.option("--user", "userid", default=None, help="Revoke every token of this staff member (吊销该成员全部令牌).")
@click.option("--as", "as_user", required=True, help=AS_HELP)
def revoke_command(token_id: str | None, userid: str | None, as_user: str) -> None:
    """Revoke a staff API token by its id, or every token of --user (吊销访问令牌)."""
    if (token_id is None) == (userid is None):
        fail("请给出令牌编号，或用 --user 指定成员（二者选一）")
    settings = load_settings()

    async def work(factory: SessionFactory) -> str:
        now = utcnow()
        async with write_transaction(factory) as session:
            actor = await _actor(session, as_user)
            if userid is not None:
                count = await revoke_staff_tokens(session, settings.corp_id, userid, now)
                counted: dict[str, object] = {"revoked": count}
                await audit.record(
                    session, settings.corp_id, "staff_token.revoked_all", "staff", userid, counted, actor
                )
                return f"已吊销成员 {userid} 的 {count} 个令牌"
            assert token_id is not None
            row = await revoke_token(session, token_id, now)
            if row is None or row.corp_id != settings.corp_id:
                raise ToolFailure(f"没有编号为 {token_id} 的令牌")
            detail = {"token_id": token_id}
            await audit.record(
                session, settings.corp_id, "staff_token.revoked", "staff", row.staff_userid, detail, actor
            )
            return f"已吊销令牌 {token_id}（成员 {row.staff_userid}）"

    click.echo(_run(settings, work))


def session_store(settings: Settings, factory: SessionFactory) -> tuple[SessionStore, aioredis.Redis | None]:
    """Where console sessions live: Redis when LIANYI_REDIS_URL is set, else the database."""
    if settings.redis_url:
        redis = aioredis.from_url(settings.redis_url)
        return RedisSessionStore(redis, RedisKeys(settings.redis_prefix)), redis
    return SqlSessionStore(factory), None


@click.group("session")
def session() -> None:
    """Console sessions (后台登录会话): end them all."""


@session.command("revoke-all")
@click.option("--as", "as_user", required=True, help=AS_HELP)
def revoke_all_command(as_user: str) -> None:
    """Sign everyone out of the console (结束所有后台登录会话)."""
    settings = load_settings()

    async def work(factory: SessionFactory) -> int:
        async with factory() as db:
            actor = await _actor(db, as_user)
        store, redis = session_store(settings, factory)
        try:
            count = await store.revoke_all(utcnow())
        finally:
            if redis is not None:
                await redis.aclose()
        async with write_transaction(factory) as db:
            await audit.record(db, settings.corp_id, "sessions.revoked_all", "sessions", "*", {"revoked": count}, actor)
        return count

    click.echo(f"已结束 {_run(settings, work)} 个后台登录会话")
