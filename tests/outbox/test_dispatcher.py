"""The outbox dispatcher on SQLite and PostgreSQL against the fake WeCom API.

Every test runs on both databases (the ``session_factory`` fixture is parametrised). Time is a fake clock
shared by the dispatcher, the client and the fake API, so backoffs and deadlines are jumped over.
"""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import update
from sqlmodel import select

from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import CommandStatus, DeadLetter, OutboxCommand
from tests.outbox.support import add_command, commands_by_key, drain, make_dispatcher, tagging
from tests.wecom.backends import Backend
from tests.wecom.fake_api import EXT, FakeClock, HttpStatus, RunningFake

WELCOME = f"{EXT}/send_welcome_msg"
MARK_TAG = f"{EXT}/mark_tag"
MESSAGE = "/cgi-bin/message/send"


def welcome(code: str) -> dict[str, object]:
    return {"welcome_code": code, "text": {"content": "您好，欢迎咨询"}, "attachments": []}


async def test_success_is_done_with_the_result(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    await add_command(session_factory, clock, CommandKind.SEND_WELCOME, "welcome:c1", welcome("c1"))
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 1
    command = (await commands_by_key(session_factory))["welcome:c1"]
    assert command.status == CommandStatus.DONE
    assert command.result == {"errcode": 0, "errmsg": "ok"}
    assert command.attempts == 1 and command.finished_at is not None and command.claimed_until is None
    assert fake_wecom.state.welcome_sends["c1"] == 1
    assert fake_wecom.state.requests[-1].body == {"welcome_code": "c1", "text": {"content": "您好，欢迎咨询"}}
    assert await dispatcher.run_once() == 0


async def test_fatal_error_fails_without_retry(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.script(MARK_TAG, 84061)
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:wm1", tagging("wm1"))
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    command = (await commands_by_key(session_factory))["tag:wm1"]
    assert (command.status, command.last_errcode, command.attempts) == (CommandStatus.FAILED, 84061, 1)
    assert fake_wecom.state.calls[MARK_TAG] == 1


async def test_retryable_errors_back_off_then_succeed(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.script(MARK_TAG, -1, HttpStatus(502))
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:wm1", tagging("wm1"))
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 1
    first = (await commands_by_key(session_factory))["tag:wm1"]
    assert (first.status, first.last_errcode, first.attempts) == (CommandStatus.PENDING, -1, 1)
    assert first.not_before >= clock.utcnow() + timedelta(seconds=1)
    assert await dispatcher.run_once() == 0  # not due yet
    await drain(session_factory, clock, dispatcher)
    command = (await commands_by_key(session_factory))["tag:wm1"]
    assert (command.status, command.attempts) == (CommandStatus.DONE, 3)
    assert fake_wecom.state.marks[("zhangsan", "wm1")] == 1


async def test_retries_exhausted_is_dead_with_a_dead_letter(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.script(MARK_TAG, -1, 45033, -1, -1)
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:wm1", tagging("wm1"))
    client = memory_backend.client(fake_wecom, http_session)
    await drain(session_factory, clock, make_dispatcher(session_factory, client, clock, max_attempts=3))
    command = (await commands_by_key(session_factory))["tag:wm1"]
    assert (command.status, command.attempts, command.last_errcode) == (CommandStatus.DEAD, 3, -1)
    async with session_factory() as session:
        letters = (await session.exec(select(DeadLetter))).all()
    assert [(d.source, d.ref, d.event_type, d.attempts) for d in letters] == [("outbox", "tag:wm1", "mark_tag", 3)]
    assert letters[0].payload == tagging("wm1")
    assert fake_wecom.state.calls[MARK_TAG] == 3


async def test_welcome_is_never_sent_in_the_last_second_before_its_deadline(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    deadline = clock.utcnow() + timedelta(seconds=20)
    await add_command(session_factory, clock, CommandKind.SEND_WELCOME, "welcome:c1", welcome("c1"), deadline=deadline)
    clock.advance(19.5)
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 1
    command = (await commands_by_key(session_factory))["welcome:c1"]
    assert command.status == CommandStatus.EXPIRED
    assert fake_wecom.state.calls[WELCOME] == 0


async def test_deadline_beats_retries(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.script(WELCOME, 45009)  # "come back in a minute" — the code is worthless by then
    deadline = clock.utcnow() + timedelta(seconds=20)
    await add_command(session_factory, clock, CommandKind.SEND_WELCOME, "welcome:c1", welcome("c1"), deadline=deadline)
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    command = (await commands_by_key(session_factory))["welcome:c1"]
    assert (command.status, command.last_errcode, command.attempts) == (CommandStatus.EXPIRED, 45009, 1)
    assert "deadline" in (command.last_error or "")
    assert fake_wecom.state.calls[WELCOME] == 1


async def test_welcome_code_already_used_on_first_attempt_fails(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.welcome_sends["c1"] = 1  # the chat began (or another app used the code) before us
    await add_command(session_factory, clock, CommandKind.SEND_WELCOME, "welcome:c1", welcome("c1"))
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    command = (await commands_by_key(session_factory))["welcome:c1"]
    assert (command.status, command.last_errcode) == (CommandStatus.FAILED, 41051)
    assert fake_wecom.state.calls[WELCOME] == 1


async def test_welcome_code_used_after_an_uncertain_attempt_is_done_and_not_retried(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    fake_wecom.state.script(WELCOME, HttpStatus(504))
    await add_command(session_factory, clock, CommandKind.SEND_WELCOME, "welcome:c1", welcome("c1"))
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 1
    fake_wecom.state.welcome_sends["c1"] = 1  # the gateway timed out after WeCom had delivered it
    await drain(session_factory, clock, dispatcher)
    command = (await commands_by_key(session_factory))["welcome:c1"]
    assert command.status == CommandStatus.DONE
    assert command.result == {"errcode": 41051, "already_sent": True}
    assert fake_wecom.state.calls[WELCOME] == 2


async def test_expired_lease_of_a_crashed_process_is_reclaimed(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:crashed", tagging("wm1"))
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:alive", tagging("wm2"))
    table = OutboxCommand.__table__  # type: ignore[attr-defined]
    now = clock.utcnow()
    async with transaction(session_factory) as session:
        conn = await session.connection()
        for key, lease_end in [("tag:crashed", now - timedelta(seconds=1)), ("tag:alive", now + timedelta(seconds=30))]:
            await conn.execute(
                update(table)
                .where(table.c.idempotency_key == key)
                .values(status="running", claimed_by="dead-process", claimed_until=lease_end, attempts=1)
            )
    dispatcher = make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    assert await dispatcher.run_once() == 1
    commands = await commands_by_key(session_factory)
    assert (commands["tag:crashed"].status, commands["tag:crashed"].attempts) == (CommandStatus.DONE, 2)
    assert commands["tag:crashed"].claimed_by == "dispatcher-1"
    assert (commands["tag:alive"].status, commands["tag:alive"].claimed_by) == (CommandStatus.RUNNING, "dead-process")
    assert fake_wecom.state.marks == {("zhangsan", "wm1"): 1}


async def test_unknown_kind_fails(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    async with transaction(session_factory) as session:
        session.add(OutboxCommand(corp_id="c", kind="teleport", idempotency_key="x", not_before=clock.utcnow()))
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    command = (await commands_by_key(session_factory))["x"]
    assert command.status == CommandStatus.FAILED
    assert "teleport" in (command.last_error or "")


async def test_app_messages_over_the_member_limit_wait_instead_of_being_dropped(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    for i in range(35):
        payload = {"touser": "zhangsan", "msgtype": "text", "text": {"content": f"新线索 {i}"}}
        await add_command(session_factory, clock, CommandKind.SEND_APP_MESSAGE, f"notify:{i}", payload)
    client = memory_backend.client(fake_wecom, http_session, member_messages_per_minute=30)
    await drain(session_factory, clock, make_dispatcher(session_factory, client, clock))
    commands = await commands_by_key(session_factory)
    assert {c.status for c in commands.values()} == {CommandStatus.DONE}
    assert len(fake_wecom.state.delivered["zhangsan"]) == 35
    assert fake_wecom.state.dropped["zhangsan"] == 0
    assert fake_wecom.state.calls[MESSAGE] == 35


@pytest.mark.parametrize("kind", [CommandKind.SEND_WELCOME, CommandKind.MARK_TAG])
async def test_payload_is_sent_as_documented(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
    kind: CommandKind,
) -> None:
    payload = welcome("c9") if kind is CommandKind.SEND_WELCOME else tagging("wm9")
    await add_command(session_factory, clock, kind, "k", payload)
    await drain(
        session_factory, clock, make_dispatcher(session_factory, memory_backend.client(fake_wecom, http_session), clock)
    )
    # mark_tag reads the contact back afterwards: compare the call the command is about
    sent = next(r.body for r in reversed(fake_wecom.state.requests) if not r.path.endswith("externalcontact/get"))
    expected = {k: v for k, v in payload.items() if v != []} if kind is CommandKind.SEND_WELCOME else payload
    assert sent == expected


async def test_refused_credentials_keep_commands_for_a_replay(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:wm1", tagging("wm1"))
    await add_command(session_factory, clock, CommandKind.MARK_TAG, "tag:wm2", tagging("wm2"))
    client = memory_backend.client(fake_wecom, http_session, secret="rotated-away")
    await drain(session_factory, clock, make_dispatcher(session_factory, client, clock, max_attempts=2))
    commands = await commands_by_key(session_factory)
    assert {(c.status, c.last_errcode, c.attempts) for c in commands.values()} == {(CommandStatus.DEAD, 40001, 2)}
    assert fake_wecom.state.calls["/cgi-bin/gettoken"] == 2  # once per 300 s cooldown, not once per command
    assert fake_wecom.state.calls[MARK_TAG] == 0


async def test_a_command_left_waiting_for_a_slot_until_its_lease_is_nearly_over_is_released(
    session_factory: SessionFactory,
    clock: FakeClock,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    memory_backend: Backend,
) -> None:
    # message/send's per-API window (the per-member one postpones at once instead of waiting)
    client = memory_backend.client(fake_wecom, http_session, api_rate_per_minute=1)
    await client.send_app_message({"touser": "earlier", "msgtype": "text", "text": {"content": "earlier"}})
    clock.advance(17)  # message/send's next slot opens 44 s from now (its window is 60 s + 1 s of slack)
    for key, member in [("notify:1", "busy"), ("notify:2", "free")]:
        payload = {"touser": member, "msgtype": "text", "text": {"content": "新线索"}}
        await add_command(session_factory, clock, CommandKind.SEND_APP_MESSAGE, key, payload)
    dispatcher = make_dispatcher(session_factory, client, clock, concurrency=1, batch=2)
    assert await dispatcher.run_once() == 2
    commands = await commands_by_key(session_factory)
    assert (commands["notify:1"].status, commands["notify:1"].attempts) == (CommandStatus.DONE, 1)
    # notify:2 sat behind a 44 s limiter wait; with 1 s of its 45 s call window left it was handed back
    assert (commands["notify:2"].status, commands["notify:2"].attempts) == (CommandStatus.PENDING, 0)
    assert commands["notify:2"].claimed_by is None
    assert fake_wecom.state.delivered["free"] == []
    await drain(session_factory, clock, dispatcher)
    assert (await commands_by_key(session_factory))["notify:2"].status == CommandStatus.DONE
    assert len(fake_wecom.state.delivered["free"]) == 1
