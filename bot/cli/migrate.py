"""``lianyi migrate``."""

from __future__ import annotations

import asyncio

import click

from bot.runtime import migrate as migrations
from bot.settings import load_storage_settings


@click.command("migrate")
@click.option("--autogenerate", is_flag=True, help="Write a new revision from model changes (developers).")
@click.option("-m", "--message", default="", help="Message of the new revision (with --autogenerate).")
def migrate_command(autogenerate: bool, message: str) -> None:
    """Apply database migrations (SQLite or PostgreSQL, from LIANYI_DATABASE_URL)."""
    url = load_storage_settings().database_url
    if autogenerate:
        if not message:
            raise click.UsageError("--autogenerate needs -m/--message")
        migrations.autogenerate(url, message)
        return
    before = asyncio.run(migrations.current_revision(url))
    migrations.upgrade(url)
    after = asyncio.run(migrations.current_revision(url))
    click.echo(f"database at {after} (was {before or 'empty'})")
