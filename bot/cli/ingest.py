"""``lianyi ingest messages FILE.jsonl --as USER``: import chat-archive (会话内容存档) messages, once each.

The importing user must hold ``message.import`` (admins); each run is audited as ``messages.imported`` with
the counts and the SHA-256 of the file (never its text)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

import click

from bot.cli.database import fail, require_database
from bot.cli.identity import as_option
from bot.runtime.services import build_services
from bot.settings import Settings, load_settings
from bot.web.ingest_api import ingest_limits
from scrm import audit
from scrm.accounts.actors import ActorRefused, require_actor
from scrm.accounts.permissions import Permission
from scrm.db import make_engine, make_session_factory, write_transaction
from scrm.db_types import utcnow
from scrm.intent.ingest import InvalidRecord, load_records, parse_message_record, store_messages


async def import_messages(settings: Settings, document: str, *, source: str, actor: str) -> tuple[int, int]:
    """Validate every record, then store them as ``actor`` in short write transactions (``LIANYI_INGEST_BATCH_*``);
    returns (records, newly stored)."""
    incoming = [
        parse_message_record(record, line=line, default_source=source) for line, record in load_records(document)
    ]
    engine = make_engine(settings.database_url)
    services = build_services(settings)
    try:
        factory = make_session_factory(engine)
        async with factory() as session:
            await require_actor(session, actor, Permission.MESSAGE_IMPORT)
        stored = await store_messages(
            factory,
            settings.corp_id,
            incoming,
            limits=ingest_limits(settings),
            intent=services.intent,
            hooks=services,
            now=utcnow,
        )
        async with write_transaction(factory) as session:
            detail = {
                "records": len(incoming),
                "stored": stored,
                "source": source,
                "file_sha256": hashlib.sha256(document.encode("utf-8")).hexdigest(),
            }
            await audit.record(session, settings.corp_id, "messages.imported", "messages", "", detail, actor=actor)
    finally:
        await engine.dispose()
    return len(incoming), stored


@click.group("ingest")
def ingest() -> None:
    """Import data from other systems (导入外部数据)."""


@ingest.command("messages")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--source",
    type=click.Choice(["archive", "kf", "aibot", "app"]),
    default="archive",
    show_default=True,
    help="Source of records that name none (记录未写 source 时的来源).",
)
@as_option("an admin")
def ingest_messages(file: Path, source: str, actor: str) -> None:
    """Import messages from a JSON-lines FILE (- = stdin); records already stored are skipped (按 msgid 去重)."""
    settings = load_settings()
    require_database(settings.database_url)
    try:
        document = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"无法读取 {file}：{exc}") from exc
    try:
        total, stored = asyncio.run(import_messages(settings, document, source=source, actor=actor))
    except InvalidRecord as exc:
        raise click.ClickException(f"{file}：{exc.zh}（未导入任何消息）") from exc
    except ActorRefused as exc:
        fail(exc.message_zh)
    click.echo(f"读取 {total} 条，新增 {stored} 条，重复 {total - stored} 条")
