"""``lianyi serve``: edge + worker + outbox dispatcher + scheduler in one process (roles may split them)."""

from __future__ import annotations

import asyncio
import logging

import click
from aiohttp import web

from bot.logs import configure_logging
from bot.runtime import migrate as migrations
from bot.settings import load_settings

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--roles", default="all", show_default=True, help="Comma list of edge,worker,dispatcher,scheduler.")
@click.option("--host", default=None, help="Override LIANYI_HOST.")
@click.option("--port", default=None, type=int, help="Override LIANYI_PORT.")
def serve_command(roles: str, host: str | None, port: int | None) -> None:
    """Run Lianyi: receive WeCom callbacks, process them, talk back to WeCom."""
    from bot.runtime.app import create_app  # the whole runtime; imported only when serving
    from bot.runtime.assembly import parse_roles

    settings = load_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    try:
        role_set = parse_roles(roles)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--roles") from None
    url = settings.database_url
    current = asyncio.run(migrations.current_revision(url))
    head = migrations.head_revision()
    if current != head:
        if url.startswith("sqlite"):
            log.info("applying migrations to the SQLite database", extra={"from": current, "to": head})
            migrations.upgrade(url)
        else:
            raise click.ClickException(
                f"database is at {current or 'empty'}, code expects {head}: run `lianyi migrate`"
            )
    from bot.inbox.durability import InboxNotDurable

    app = create_app(settings, role_set)
    try:
        web.run_app(
            app, host=host or settings.host, port=settings.port if port is None else port, print=None, access_log=None
        )
    except InboxNotDurable as exc:  # already logged in English by the runtime
        raise click.ClickException(exc.message_zh) from None
