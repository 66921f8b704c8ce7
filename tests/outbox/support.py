"""Helpers for outbox tests: enqueue commands, read them back, and drive dispatchers on a fake clock."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from bot.outbox.dispatcher import OutboxDispatcher
from bot.wecom.client import WeComClient
from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, transaction
from scrm.models import CommandStatus, OutboxCommand
from tests.conftest import TEST_CORP_ID, make_settings
from tests.wecom.fake_api import FakeClock


def tagging(external_userid: str) -> dict[str, object]:
    """A MARK_TAG payload for one contact of zhangsan."""
    return {"userid": "zhangsan", "external_userid": external_userid, "add_tag": ["et-hot"], "remove_tag": []}


async def add_command(
    sessions: SessionFactory,
    clock: FakeClock,
    kind: CommandKind,
    key: str,
    payload: dict[str, Any],
    *,
    deadline: datetime | None = None,
) -> None:
    async with transaction(sessions) as session:
        await enqueue(
            session,
            corp_id=TEST_CORP_ID,
            kind=kind,
            key=key,
            payload=payload,
            not_before=clock.utcnow(),
            deadline=deadline,
        )


async def commands_by_key(sessions: SessionFactory) -> dict[str, OutboxCommand]:
    async with sessions() as session:
        rows = (await session.exec(select(OutboxCommand))).all()
    return {row.idempotency_key: row for row in rows}


def make_dispatcher(
    sessions: SessionFactory,
    client: WeComClient,
    clock: FakeClock,
    *,
    instance_id: str = "dispatcher-1",
    max_attempts: int = 10,
    **options: Any,
) -> OutboxDispatcher:
    settings = make_settings(outbox_max_attempts=max_attempts)
    return OutboxDispatcher(sessions, client, settings, instance_id=instance_id, clock=clock.utcnow, **options)


async def drain(
    sessions: SessionFactory, clock: FakeClock, *dispatchers: OutboxDispatcher, max_rounds: int = 500
) -> None:
    """Run the dispatchers side by side until no command is left, moving the fake clock to each next due time."""
    for _ in range(max_rounds):
        if sum(await asyncio.gather(*(dispatcher.run_once() for dispatcher in dispatchers))):
            continue
        async with sessions() as session:
            pending = await session.exec(
                select(func.min(OutboxCommand.not_before)).where(
                    col(OutboxCommand.status) == CommandStatus.PENDING.value
                )
            )
            running = await session.exec(
                select(func.min(OutboxCommand.claimed_until)).where(
                    col(OutboxCommand.status) == CommandStatus.RUNNING.value
                )
            )
            due = [t for t in (pending.one(), running.one()) if t is not None]
        if not due:
            return
        clock.advance(max(0.0, (min(due) - clock.utcnow()).total_seconds()) + 0.001)
    raise AssertionError(f"outbox not drained after {max_rounds} rounds")
