"""``lianyi roster import FILE [FILE ...] [--dry-run] [--strict]``: dealers and staff from YAML or CSV files."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from bot.cli.database import fail, require_database
from bot.cli.identity import as_option
from bot.settings import Settings, load_settings
from scrm.accounts.actors import ActorRefused
from scrm.db import make_engine, make_session_factory
from scrm.leads.roster import ImportSummary, Roster, RosterError, import_roster, parse_rosters


async def run_import(settings: Settings, roster: Roster, *, actor: str, strict: bool, dry_run: bool) -> ImportSummary:
    """Import ``roster`` as ``actor`` in one transaction; a dry run rolls it back (nothing is written)."""
    engine = make_engine(settings.database_url)
    try:
        async with make_session_factory(engine)() as session:
            try:
                summary = await import_roster(session, settings.corp_id, roster, actor=actor, strict=strict)
            except BaseException:
                await session.rollback()
                raise
            if dry_run:
                await session.rollback()
            else:
                await session.commit()
            return summary
    finally:
        await engine.dispose()


def _fail(error: RosterError) -> None:
    for problem in error.problems:
        click.echo(str(problem))
    click.echo(f"发现 {len(error.problems)} 个错误，未写入任何数据")
    sys.exit(1)


@click.group("roster")
def roster() -> None:
    """Dealers and staff (门店与成员花名册)."""


@roster.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and report without writing (只检查，不写入).")
@click.option("--strict", is_flag=True, help="A userid unknown to WeCom is an error (成员不在企业微信中时报错).")
@as_option("an operator or admin")
def import_command(files: tuple[Path, ...], dry_run: bool, strict: bool, actor: str) -> None:
    """Import dealers and staff from YAML or CSV FILES as one upsert (按门店代码、成员账号更新或新增).

    Prints every problem as ``file:line[:col] message`` and exits 1 when there is any error. The import is
    audited under the ``--as`` user.
    """
    try:
        parsed = parse_rosters(files)
    except RosterError as exc:
        _fail(exc)
        return
    settings = load_settings()
    require_database(settings.database_url)
    try:
        summary = asyncio.run(run_import(settings, parsed, actor=actor, strict=strict, dry_run=dry_run))
    except RosterError as exc:
        _fail(exc)
        return
    except ActorRefused as exc:
        fail(exc.message_zh)
    for warning in summary.warnings:
        click.echo(str(warning))
    prefix = "试运行（未写入）：" if dry_run else ""
    click.echo(prefix + summary.text())
