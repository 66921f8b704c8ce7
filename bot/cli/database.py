"""The database as commands that read it see it: it must exist and be migrated, and one corp scopes the query.

A missing SQLite file is never created here (SQLAlchemy would leave an empty ``lianyi.db`` behind); a missing or
un-migrated database is one line naming ``LIANYI_DATABASE_URL`` and ``lianyi migrate``, exit 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.runtime import migrate as migrations
from scrm.db import SessionFactory, make_engine, make_session_factory
from scrm.errors import LianyiError
from scrm.models import Corp

T = TypeVar("T")


class ToolFailure(LianyiError):
    """A problem the operator must fix; the message (Chinese) is printed and the command exits 1."""


def fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _not_ready(url: str) -> ToolFailure:
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = url
    return ToolFailure(
        f"数据库不存在或尚未迁移（LIANYI_DATABASE_URL={shown}）：请检查 LIANYI_DATABASE_URL，并运行 lianyi migrate"
        " / database missing or not migrated: check LIANYI_DATABASE_URL and run `lianyi migrate`"
    )


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


async def check_database(url: str) -> None:
    """Raise :class:`ToolFailure` unless the database exists and is at this build's head migration."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        raise _not_ready(url)  # checked first: connecting would create an empty file
    try:
        current = await migrations.current_revision(url)
    except (SQLAlchemyError, OSError):
        raise _not_ready(url) from None
    if current is None or current != migrations.head_revision():
        raise _not_ready(url)


def require_database(url: str) -> None:
    """:func:`check_database` for a command about to write: its one line and exit 1 instead of a traceback."""
    try:
        asyncio.run(check_database(url))
    except ToolFailure as exc:
        fail(str(exc))


async def resolve_corp(session: AsyncSession, configured: str) -> str:
    """``LIANYI_CORP_ID`` when set (it must be in the database), else the database's only corp."""
    corps = list((await session.exec(select(Corp.corp_id))).all())
    if configured:
        if configured not in corps:
            raise ToolFailure(f"数据库中没有企业 {configured}（LIANYI_CORP_ID），请先运行 lianyi sync")
        return configured
    if len(corps) == 1:
        return corps[0]
    if not corps:
        raise ToolFailure("数据库中还没有企业：请先运行 lianyi sync")
    raise ToolFailure(
        f"数据库中有 {len(corps)} 个企业（{'、'.join(sorted(corps))}），请设置 LIANYI_CORP_ID 指定其中一个"
    )


async def _with_corp(url: str, configured_corp: str, work: Callable[[SessionFactory, str], Awaitable[T]]) -> T:
    await check_database(url)
    engine = make_engine(url)
    try:
        sessions = make_session_factory(engine)
        async with sessions() as session:
            corp_id = await resolve_corp(session, configured_corp)
        return await work(sessions, corp_id)
    finally:
        await engine.dispose()


def run_with_corp(url: str, configured_corp: str, work: Callable[[SessionFactory, str], Awaitable[T]]) -> T:
    """Run ``work(sessions, corp_id)`` on a ready database; a :class:`ToolFailure` is printed (exit 1)."""
    try:
        return asyncio.run(_with_corp(url, configured_corp, work))
    except ToolFailure as exc:
        fail(str(exc))
