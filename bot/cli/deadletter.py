"""``lianyi deadletter``: list dead letters and replay inbox events that exhausted their retries; ``unknown`` lists
the outbox commands that ended ``unknown`` (a call may have reached WeCom and nothing could tell whether it did).

A replay puts the stored event back into the inbox under the dedup key ``<original>:replay:<id>`` (a new
key, so the inbox does not drop it as a duplicate) and stamps ``replayed_at``. Replaying the same dead
letter again does nothing unless ``--force``, which uses ``<original>:replay:<id>:<unix time>``. A replay is
done ``--as`` a user holding ``deadletter.replay`` (admins) and audited as ``deadletter.replayed``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, func, select

from bot.cli.identity import as_option
from bot.inbox.base import InboxItem
from bot.inbox.factory import make_inbox
from bot.settings import Settings, load_settings
from scrm import audit
from scrm.accounts.actors import ActorRefused, require_actor
from scrm.accounts.permissions import Permission
from scrm.db import make_engine, make_session_factory, write_transaction
from scrm.db_types import utcnow
from scrm.errors import LianyiError, SettingsError
from scrm.models import CommandStatus, DeadLetter, OutboxCommand

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(f"配置错误: {exc}", err=True)
        sys.exit(2)


def _run(settings: Settings, work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(work(settings))
    except (LianyiError, SQLAlchemyError, RedisError, OSError) as exc:
        click.echo(f"错误: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        sys.exit(1)


def replay_dedup_key(letter: DeadLetter, *, forced: bool) -> str:
    key = f"{letter.ref}:replay:{letter.id}"
    if forced and letter.replayed_at is not None:
        key += f":{int(utcnow().timestamp())}"
    return key


@click.group("deadletter")
def deadletter() -> None:
    """Dead letters (死信): events and commands that exhausted their retries."""


@deadletter.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="How many, newest first.")
def list_command(limit: int) -> None:
    """List the newest dead letters."""
    letters = _run(_settings(), lambda s: _load_letters(s, limit))
    if not letters:
        click.echo("没有死信。")
        return
    table = Table(title=f"死信（最新 {len(letters)} 条）")
    for header in ("ID", "时间", "来源", "类型", "引用", "尝试次数", "已重放", "错误"):
        table.add_column(header, overflow="fold")
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.source,
            letter.event_type,
            letter.ref,
            str(letter.attempts),
            letter.replayed_at.strftime("%Y-%m-%d %H:%M:%S") if letter.replayed_at else "",
            letter.error,
        )
    Console(width=200).print(table)


async def _load_letters(settings: Settings, limit: int) -> list[DeadLetter]:
    engine = make_engine(settings.database_url)
    try:
        async with make_session_factory(engine)() as session:
            rows = await session.exec(select(DeadLetter).order_by(col(DeadLetter.id).desc()).limit(limit))
            return list(rows.all())
    finally:
        await engine.dispose()


@deadletter.command("unknown")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="How many, newest first.")
def unknown_command(limit: int) -> None:
    """List outbox commands whose outcome is unknown (a call may have reached WeCom before a crash)."""
    total, commands = _run(_settings(), lambda s: _load_unknown(s, limit))
    if not commands:
        click.echo("没有结果未知的命令。")
        return
    table = Table(title=f"结果未知的命令（共 {total} 条，显示最新 {len(commands)} 条）")
    for header in ("ID", "结束时间", "类型", "幂等键", "客户", "成员", "原因"):
        table.add_column(header, overflow="fold")
    for command in commands:
        finished = command.finished_at or command.updated_at
        table.add_row(
            str(command.id),
            finished.strftime("%Y-%m-%d %H:%M:%S"),
            command.kind,
            command.idempotency_key,
            str(command.payload.get("external_userid") or ""),
            str(command.payload.get("userid") or command.payload.get("sender") or ""),
            command.last_error or "",
        )
    Console(width=200).print(table)
    click.echo("这些命令的请求可能已到达企业微信，但无法确认是否成功；不会自动重试，请人工核实。")


async def _load_unknown(settings: Settings, limit: int) -> tuple[int, list[OutboxCommand]]:
    engine = make_engine(settings.database_url)
    try:
        async with make_session_factory(engine)() as session:
            unknown = OutboxCommand.status == CommandStatus.UNKNOWN.value
            total = (await session.exec(select(func.count()).select_from(OutboxCommand).where(unknown))).one()
            query = select(OutboxCommand).where(unknown).order_by(col(OutboxCommand.id).desc()).limit(limit)
            return int(total), list((await session.exec(query)).all())
    finally:
        await engine.dispose()


@deadletter.command("replay")
@click.argument("letter_id", metavar="ID", type=int)
@click.option("--force", is_flag=True, help="Replay again even if this dead letter was already replayed.")
@as_option("an admin")
def replay_command(letter_id: int, force: bool, actor: str) -> None:
    """Put the event of dead letter ID back into the inbox."""
    message, code = _run(_settings(), lambda s: _replay(s, letter_id, force, actor))
    click.echo(message)
    sys.exit(code)


async def _replay(settings: Settings, letter_id: int, force: bool, actor: str) -> tuple[str, int]:
    engine = make_engine(settings.database_url)
    redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
    factory = make_session_factory(engine)
    inbox = make_inbox(settings, session_factory=factory, redis=redis)
    try:
        async with factory() as session:
            try:
                await require_actor(session, actor, Permission.DEADLETTER_REPLAY)
            except ActorRefused as exc:
                return exc.message_zh, 1
            letter = await session.get(DeadLetter, letter_id)
        if letter is None:
            return f"死信 {letter_id} 不存在。", 1
        if letter.source != "inbox":
            return f"死信 {letter_id} 来自 {letter.source}，只有来自 inbox 的事件可以重放。", 1
        if letter.replayed_at is not None and not force:
            when = letter.replayed_at.strftime("%Y-%m-%d %H:%M:%S")
            return f"死信 {letter_id} 已于 {when} (UTC) 重放过，未重复操作；如需再次重放请加 --force。", 0
        key = replay_dedup_key(letter, forced=force)
        item = InboxItem(
            dedup_key=key,
            ordering_key=letter.ordering_key,
            event_type=letter.event_type,
            corp_id=letter.corp_id,
            payload=dict(letter.payload),
        )
        added = await inbox.put(item)
        async with write_transaction(factory) as session:
            stored = await session.get(DeadLetter, letter_id)
            assert stored is not None
            before = stored.model_dump()
            stored.replayed_at = utcnow()
            session.add(stored)
            await audit.record_change(
                session,
                stored.corp_id,
                "deadletter.replayed",
                "dead_letter",
                str(letter_id),
                actor=actor,
                before=before,
                after=stored.model_dump(),
                detail={"dedup_key": key, "added": added},
            )
        if not added:
            return f"死信 {letter_id} 的事件已在收件箱中（{key}），已标记为已重放。", 0
        return f"死信 {letter_id} 已重放，事件重新放入收件箱：{key}", 0
    finally:
        await inbox.close()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
