"""``lianyi ingest messages FILE.jsonl``: imports once, reports counts, refuses a bad file as a whole.

The command runs its own event loop, so the tests invoke it in a thread."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import select

from bot.cli import cli
from scrm.db import SessionFactory
from scrm.models import AuditLog, Message
from scrm.models.accounts import UserRole
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.ingest.conftest import SOP_DIR
from tests.users_support import Account, add_accounts


@pytest.fixture
async def runner(database_url: str, session_factory: SessionFactory, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI's settings, and an admin (``admin1``, who may import) and an operator (``op1``, who may not)."""
    await add_accounts(session_factory, (Account("admin1", UserRole.ADMIN), Account("op1", UserRole.OPERATOR)))
    for name, value in {
        "CORP_ID": TEST_CORP_ID,
        "CALLBACK_TOKEN": TEST_TOKEN,
        "CALLBACK_AES_KEY": TEST_AES_KEY,
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "SOP_DIR": SOP_DIR,
        "LOG_JSON": "false",
    }.items():
        monkeypatch.setenv("LIANYI_" + name, value)
    return CliRunner()


def _write(path: Path, *records: dict[str, object]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n", encoding="utf-8")
    return path


async def test_import_counts_new_and_duplicate_messages(
    runner: CliRunner, tmp_path: Path, session_factory: SessionFactory
) -> None:
    records = [
        {"msgid": f"arc-{n}", "sent_at": 1763870400 + n, "external_userid": "wmCli", "text": f"消息{n}"}
        for n in range(3)
    ]
    first = await asyncio.to_thread(
        runner.invoke, cli, ["ingest", "messages", str(_write(tmp_path / "a.jsonl", *records[:2])), "--as", "admin1"]
    )
    assert (first.exit_code, first.output.strip()) == (0, "读取 2 条，新增 2 条，重复 0 条")
    again = await asyncio.to_thread(
        runner.invoke, cli, ["ingest", "messages", str(_write(tmp_path / "b.jsonl", *records)), "--as", "admin1"]
    )
    assert again.output.strip() == "读取 3 条，新增 1 条，重复 2 条"
    async with session_factory() as session:
        assert len((await session.exec(select(Message))).all()) == 3


async def test_a_bad_line_imports_nothing(runner: CliRunner, tmp_path: Path, session_factory: SessionFactory) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"msgid": "ok", "sent_at": 1, "external_userid": "wm1"}\n{"msgid": 5}\n', encoding="utf-8")
    result = await asyncio.to_thread(runner.invoke, cli, ["ingest", "messages", str(path), "--as", "admin1"])
    assert result.exit_code == 1
    assert "第 2 行：msgid 必须是字符串" in result.output
    async with session_factory() as session:
        assert (await session.exec(select(Message))).all() == []


async def test_only_an_admin_imports_and_the_import_is_audited(
    runner: CliRunner, tmp_path: Path, session_factory: SessionFactory
) -> None:
    path = _write(
        tmp_path / "a.jsonl", {"msgid": "m1", "sent_at": 1763870400, "external_userid": "wm1", "text": "买车"}
    )
    refused = await asyncio.to_thread(runner.invoke, cli, ["ingest", "messages", str(path), "--as", "op1"])
    assert (refused.exit_code, refused.output.strip()) == (1, "用户 op1（运营）无权执行此操作（message.import）")
    async with session_factory() as session:
        assert (await session.exec(select(Message))).all() == []
    done = await asyncio.to_thread(runner.invoke, cli, ["ingest", "messages", str(path), "--as", "admin1"])
    assert done.exit_code == 0, done.output
    async with session_factory() as session:
        (row,) = (await session.exec(select(AuditLog).where(AuditLog.action == "messages.imported"))).all()
    assert row.actor == "admin1"
    assert (row.detail or {})["records"] == 1 and (row.detail or {})["stored"] == 1
    assert "买车" not in str(row.detail)  # the file's digest, never its text
