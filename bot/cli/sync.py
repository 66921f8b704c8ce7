"""``lianyi sync``: full initial sync of corp tags, staff, contacts and groups (resumable)."""

from __future__ import annotations

import asyncio

import aiohttp
import click
import redis.asyncio as aioredis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli.database import require_database
from bot.logs import configure_logging
from bot.runtime.fullsync import STEP_LABELS, STEPS, FullSync, SyncReport
from bot.settings import Settings, load_settings
from bot.wecom.client import build_wecom_client
from scrm.db import make_engine, make_session_factory
from scrm.errors import LianyiError


async def run_full_sync(settings: Settings, *, restart: bool, console: Console) -> SyncReport:
    engine = make_engine(settings.database_url)
    redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
    try:
        async with aiohttp.ClientSession() as http:
            client = build_wecom_client(settings, http, redis)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                sync = FullSync(
                    client, make_session_factory(engine), settings.corp_id, progress=progress, restart=restart
                )
                return await sync.run()
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


@click.command("sync")
@click.option("--restart", is_flag=True, help="Ignore saved checkpoints and start a new full pass (从头同步).")
def sync_command(restart: bool) -> None:
    """Full sync from WeCom: corp tags, staff, contacts, groups (全量同步，可断点续传)."""
    settings = load_settings()
    require_database(settings.database_url)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    console = Console(stderr=True)
    try:
        report = asyncio.run(run_full_sync(settings, restart=restart, console=console))
    except LianyiError as exc:
        raise click.ClickException(f"同步中断（再次运行 lianyi sync 将从断点继续）：{exc}") from exc
    for step in STEPS:
        note = "（上次已完成）" if step in report.resumed else ""
        skipped = f"，跳过 {report.skipped[step]}" if report.skipped[step] else ""
        click.echo(f"{STEP_LABELS[step]}：同步 {report.applied[step]}{skipped}{note}")
