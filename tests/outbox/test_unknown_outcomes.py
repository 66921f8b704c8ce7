"""No lying final states: a welcome whose call may have reached WeCom unanswered never ends ``expired``.

A crashed process leaves its command ``running``; the next dispatcher reclaims it after the lease. Whether a call
had started is in ``call_started_at`` (committed before the call). Past the deadline nothing can be asked of
WeCom (a late call answers 41051 whether or not the code was used), so such a command is ``unknown``; one whose
call never started is honestly ``expired``. Within the deadline a retry asks WeCom: 41051 after a started call
means our welcome went out (``done``), after a claim that never called it means someone else used the code
(``failed``). Every test runs on SQLite and PostgreSQL; the CLI lists what ended ``unknown``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import aiohttp
from click.testing import CliRunner
from sqlalchemy import update

from bot.cli.deadletter import deadletter
from bot.web.health import count_unknown_outcomes
from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import CommandStatus, OutboxCommand
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.outbox.support import add_command, commands_by_key, drain, make_dispatcher
from tests.wecom.backends import Backend
from tests.wecom.fake_api import EXT, FakeClock, HttpStatus, RunningFake

WELCOME = f"{EXT}/send_welcome_msg"


def welcome(code: str) -> dict[str, object]:
    return {"welcome_code": code, "text": {"content": "您好"}, "attachments": [], "external_userid": "wm1"}


async def _left_running_by_a_crash(
    sessions: SessionFactory, clock: FakeClock, code: str, *, deadline_in: float, call_started: bool
) -> None:
    """A welcome claimed by a process that died (its lease has lapsed), with or without a call under way."""
    now = clock.utcnow()
    deadline = now + timedelta(seconds=deadline_in)
    await add_command(sessions, clock, CommandKind.SEND_WELCOME, f"welcome:{code}", welcome(code), deadline=deadline)
    table = OutboxCommand.__table__  # type: ignore[attr-defined]
    started: datetime | None = now - timedelta(seconds=11) if call_started else None
    async with transaction(sessions) as session:
        conn = await session.connection()
        await conn.execute(
            update(table)
            .where(table.c.idempotency_key == f"welcome:{code}")
            .values(
                status="running",
                claimed_by="dead-process",
                claimed_until=now - timedelta(seconds=1),
                attempts=1,
                call_started_at=started,
            )
        )


async def test_a_call_under_way_at_the_crash_is_unknown_past_the_deadline_and_a_claim_alone_expires(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    await _left_running_by_a_crash(session_factory, clock, "called", deadline_in=0.5, call_started=True)
    await _left_running_by_a_crash(session_factory, clock, "claimed", deadline_in=0.5, call_started=False)
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 2
    commands = await commands_by_key(session_factory)
    assert commands["welcome:called"].status == CommandStatus.UNKNOWN
    assert commands["welcome:called"].finished_at is not None
    assert commands["welcome:claimed"].status == CommandStatus.EXPIRED
    assert fake_wecom.state.calls[WELCOME] == 0  # past the deadline WeCom is not asked
    assert await count_unknown_outcomes(session_factory) == 1


async def test_within_the_deadline_wecom_settles_it(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    await _left_running_by_a_crash(session_factory, clock, "reached", deadline_in=15, call_started=True)
    await _left_running_by_a_crash(session_factory, clock, "taken", deadline_in=15, call_started=False)
    fake_wecom.state.welcome_sends["reached"] = 1  # the dead process's call got through
    fake_wecom.state.welcome_sends["taken"] = 1  # the chat began before our first call
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    commands = await commands_by_key(session_factory)
    assert commands["welcome:reached"].status == CommandStatus.DONE
    assert commands["welcome:reached"].result == {"errcode": 41051, "already_sent": True}
    assert (commands["welcome:taken"].status, commands["welcome:taken"].last_errcode) == (CommandStatus.FAILED, 41051)


async def test_a_lost_answer_whose_retry_would_miss_the_deadline_is_unknown(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.script(WELCOME, HttpStatus(504), 45009)  # the gateway timed out; then WeCom answers
    for code in ("lost", "refused"):
        deadline = clock.utcnow() + timedelta(seconds=1.8)  # a retry (after ≥ 1 s) would come too late
        await add_command(
            session_factory, clock, CommandKind.SEND_WELCOME, f"welcome:{code}", welcome(code), deadline=deadline
        )
        await drain(
            session_factory,
            clock,
            make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock),
        )
    commands = await commands_by_key(session_factory)
    assert commands["welcome:lost"].status == CommandStatus.UNKNOWN  # it may have been delivered
    assert commands["welcome:lost"].call_started_at is not None
    assert (commands["welcome:refused"].status, commands["welcome:refused"].last_errcode) == (
        CommandStatus.EXPIRED,  # WeCom answered 45009: nothing was sent
        45009,
    )
    assert fake_wecom.state.calls[WELCOME] == 2


async def test_the_cli_lists_unknown_outcomes(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
    database_url: str,
) -> None:
    env = {
        "LIANYI_CORP_ID": TEST_CORP_ID,
        "LIANYI_CALLBACK_TOKEN": TEST_TOKEN,
        "LIANYI_CALLBACK_AES_KEY": TEST_AES_KEY,
        "LIANYI_SECRET_KEY": TEST_SECRET_KEY,
        "LIANYI_DATABASE_URL": database_url,
        "LIANYI_REDIS_URL": "",
    }
    runner = CliRunner()
    empty = await asyncio.to_thread(runner.invoke, deadletter, ["unknown"], env=env, catch_exceptions=False)
    assert (empty.exit_code, empty.output.strip()) == (0, "没有结果未知的命令。")
    await _left_running_by_a_crash(session_factory, clock, "gone", deadline_in=0.5, call_started=True)
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 1
    listed = await asyncio.to_thread(runner.invoke, deadletter, ["unknown"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0
    assert "共 1 条" in listed.output and "welcome:gone" in listed.output and "wm1" in listed.output
