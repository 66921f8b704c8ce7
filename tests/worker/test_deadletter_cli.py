"""``lianyi deadletter list/replay`` on dead letters the worker really wrote; a replay is an admin's, audited."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from click.testing import CliRunner, Result
from sqlmodel import select

from bot.cli.deadletter import deadletter
from bot.edge.events import WeComEvent
from bot.inbox.base import Inbox
from bot.runtime.router import HandlerContext, Router
from bot.runtime.worker import Worker
from scrm.db import SessionFactory
from scrm.models import AuditLog, DeadLetter
from scrm.models.accounts import UserRole
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.users_support import Account, add_accounts
from tests.worker.callbacks import contact_added, inbox_item

ADMIN = ("--as", "admin1")


def cli_env(database_url: str, inbox_kind: str, redis_url: str, redis_prefix: str) -> dict[str, str | None]:
    return {
        "LIANYI_CORP_ID": TEST_CORP_ID,
        "LIANYI_CALLBACK_TOKEN": TEST_TOKEN,
        "LIANYI_CALLBACK_AES_KEY": TEST_AES_KEY,
        "LIANYI_SECRET_KEY": TEST_SECRET_KEY,
        "LIANYI_DATABASE_URL": database_url,
        "LIANYI_REDIS_URL": redis_url if inbox_kind == "redis" else "",
        "LIANYI_REDIS_PREFIX": redis_prefix,
    }


async def invoke(args: list[str], env: Mapping[str, str | None]) -> Result:
    """The CLI runs its own event loop, so it runs in a thread next to the test's loop."""
    return await asyncio.to_thread(CliRunner().invoke, deadletter, args, env=env, catch_exceptions=False)


async def test_dead_letter_is_listed_and_replayed_once(
    inbox: Inbox,
    ctx: HandlerContext,
    session_factory: SessionFactory,
    database_url: str,
    inbox_kind: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    router = Router()
    fixed = False
    seen: list[tuple[str, str]] = []

    @router.on("contact.added")
    async def handler(event: WeComEvent, ctx: HandlerContext) -> None:
        if not fixed:
            raise LookupError("staff zhangsan not synced yet")
        seen.append((event.dedup_key, event.external_userid))  # type: ignore[attr-defined]

    worker = Worker(inbox, router, ctx, consumer="w", max_attempts=2, backoff_base=0.0)
    item = inbox_item(contact_added("wm客户1", 1))
    await inbox.put(item)
    assert await worker.run_once() == 2
    async with session_factory() as session:
        (letter,) = (await session.exec(select(DeadLetter))).all()
    env = cli_env(database_url, inbox_kind, redis_url, redis_prefix)

    listed = await invoke(["list", "--limit", "5"], env)
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if item.dedup_key in line)
    assert str(letter.id) in row and "contact.added" in row and "LookupError" in row

    fixed = True
    await add_accounts(session_factory, (Account("admin1", UserRole.ADMIN), Account("op1", UserRole.OPERATOR)))
    refused = await invoke(["replay", str(letter.id), "--as", "op1"], env)
    assert (refused.exit_code, refused.output.strip()) == (1, "用户 op1（运营）无权执行此操作（deadletter.replay）")
    assert await worker.run_once() == 0  # nothing was put back
    replayed = await invoke(["replay", str(letter.id), *ADMIN], env)
    assert replayed.exit_code == 0, replayed.output
    replay_key = f"{item.dedup_key}:replay:{letter.id}"
    assert replay_key in replayed.output
    assert await worker.run_once() == 1
    assert seen == [(item.dedup_key, "wm客户1")]  # the handler sees the original event
    async with session_factory() as session:
        stamped = await session.get(DeadLetter, letter.id)
        audits = (await session.exec(select(AuditLog))).all()
    assert stamped is not None and stamped.replayed_at is not None
    assert [(a.action, a.actor, a.subject_id) for a in audits] == [("deadletter.replayed", "admin1", str(letter.id))]
    assert (audits[0].detail or {})["dedup_key"] == replay_key

    again = await invoke(["replay", str(letter.id), *ADMIN], env)
    assert again.exit_code == 0 and "已于" in again.output and "--force" in again.output
    assert await worker.run_once() == 0  # nothing was put back

    forced = await invoke(["replay", str(letter.id), "--force", *ADMIN], env)
    assert forced.exit_code == 0, forced.output
    assert await worker.run_once() == 1
    assert len(seen) == 2


async def test_replay_of_a_missing_dead_letter_fails(
    database_url: str, session_factory: SessionFactory, inbox_kind: str, redis_url: str, redis_prefix: str
) -> None:
    await add_accounts(session_factory, (Account("admin1", UserRole.ADMIN),))
    result = await invoke(["replay", "4242", *ADMIN], cli_env(database_url, inbox_kind, redis_url, redis_prefix))
    assert result.exit_code == 1
    assert "4242 不存在" in result.output


def test_missing_settings_exit_2_with_one_line() -> None:
    env = {"LIANYI_CORP_ID": None, "LIANYI_CALLBACK_TOKEN": "t", "LIANYI_CALLBACK_AES_KEY": TEST_AES_KEY}
    result = CliRunner().invoke(deadletter, ["list"], env=env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["配置错误: LIANYI_CORP_ID is required but not set"]


async def test_list_on_an_empty_database_says_so(database_url: str, redis_url: str) -> None:
    result = await invoke(["list"], cli_env(database_url, "sql", redis_url, "unused"))
    assert result.exit_code == 0
    assert result.output.strip() == "没有死信。"


async def test_unreachable_database_exits_1_with_one_line(redis_url: str) -> None:
    env = cli_env("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere", "sql", redis_url, "unused")
    result = await invoke(["list"], env)
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("错误: ")
