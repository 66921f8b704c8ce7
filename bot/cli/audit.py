"""``lianyi audit list [--user U] [--since YYYY-MM-DD] [--action PREFIX] [--limit N] [--json] --as ADMIN``.

The audit log, newest first: who (a username, or ``system`` for what Lianyi did by itself), what, when (China
time), on which subject, and the detail (counts and digests; never personal data). Reading it needs
``audit.read`` (admins).
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
from sqlmodel import col, select

from bot.cli.database import check_database, fail
from bot.cli.identity import as_option
from bot.cli.text_table import table
from bot.settings import load_query_settings
from scrm.accounts.actors import require_actor
from scrm.accounts.permissions import Permission
from scrm.db import make_engine, make_session_factory
from scrm.errors import LianyiError
from scrm.models import AuditLog

SHOWN_ZONE = ZoneInfo("Asia/Shanghai")
DETAIL_CHARS = 80  # of the detail column in the table (--json shows all of it)


def start_of_day(text: str) -> datetime:
    """00:00 China time of ``YYYY-MM-DD``; a bad date is a usage error (exit 2)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"日期格式应为 YYYY-MM-DD：{text}", param_hint="--since") from None
    return datetime(day.year, day.month, day.day, tzinfo=SHOWN_ZONE)


async def read_audit(
    url: str, actor: str, *, user: str, since: datetime | None, action: str, limit: int
) -> list[AuditLog]:
    await check_database(url)
    engine = make_engine(url)
    try:
        async with make_session_factory(engine)() as session:
            await require_actor(session, actor, Permission.AUDIT_READ)
            query = select(AuditLog)
            if user:
                query = query.where(AuditLog.actor == user)
            if since is not None:
                query = query.where(col(AuditLog.created_at) >= since)
            if action:
                query = query.where(col(AuditLog.action).startswith(action, autoescape=True))
            query = query.order_by(col(AuditLog.created_at).desc(), col(AuditLog.id).desc()).limit(limit)
            return list((await session.exec(query)).all())
    finally:
        await engine.dispose()


def as_json(entry: AuditLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.created_at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "corp_id": entry.corp_id,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "detail": entry.detail or {},
    }


def _detail_text(detail: dict[str, Any] | None) -> str:
    text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def render(entries: list[AuditLog]) -> str:
    rows = [
        (
            e.created_at.astimezone(SHOWN_ZONE).strftime("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.action,
            f"{e.subject_type}:{e.subject_id}" if e.subject_type else e.subject_id or "-",
            _detail_text(e.detail),
        )
        for e in entries
    ]
    return table(["时间", "操作人", "操作", "对象", "详情"], rows)


@click.group("audit")
def audit() -> None:
    """The audit log: who changed what, and when (审计日志)."""


@audit.command("list")
@click.option("--user", default="", help="Only this user's actions (操作人用户名).")
@click.option("--since", default=None, help="From this day on, YYYY-MM-DD (China time).")
@click.option("--action", default="", help="Only actions starting with this, e.g. campaign. or user.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="How many, newest first.")
@click.option("--json", "json_out", is_flag=True, help="Print JSON instead of a table.")
@as_option("an admin")
def list_command(user: str, since: str | None, action: str, limit: int, json_out: bool, actor: str) -> None:
    """The newest audit rows, filtered by user, day and action (审计记录)."""
    start = start_of_day(since) if since is not None else None
    url = load_query_settings().database_url
    try:
        entries = asyncio.run(read_audit(url, actor, user=user, since=start, action=action, limit=limit))
    except LianyiError as exc:
        fail(str(exc))
    if json_out:
        click.echo(json.dumps([as_json(e) for e in entries], ensure_ascii=False, indent=2))
    elif entries:
        click.echo(render(entries))
    else:
        click.echo("没有符合条件的审计记录")
