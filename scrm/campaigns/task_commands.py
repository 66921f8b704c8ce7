"""What campaign tracking asks WeCom to do with a batch's task: remind its owner, or cancel it.

Both are outbox commands (:class:`~scrm.commands.CommandKind` ``REMIND_GROUPMSG`` and ``CANCEL_GROUPMSG``),
written in the transaction that holds the batch row and records the decision, with keys that name the side
effect: ``campaign-remind:<batch id>:<n>`` for the batch's n-th reminder and ``campaign-cancel:<batch id>``. A
second leader, a replayed tick or a crash after the commit finds the key taken and writes nothing, so a reminder
is never sent twice; the reminder's time is written down *before* it is sent, so a crash can lose one, never
add one beyond WeCom's three per 24 h. The tracking tick runs the command at once (``bot``); a command it could
not finish is the outbox dispatcher's like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.campaigns.tracking import TrackItem
from scrm.commands import CommandKind, enqueue
from scrm.db import SessionFactory, write_transaction
from scrm.models import BatchStatus, CampaignBatch, CommandStatus, OutboxCommand

REMIND_DEADLINE = timedelta(minutes=5)  # a reminder that cannot go out by then expires (quiet hours may begin)


def remind_key(batch_id: int, n: int) -> str:
    """The key of the batch's ``n``-th reminder (1-based)."""
    return f"campaign-remind:{batch_id}:{n}"


def cancel_key(batch_id: int) -> str:
    return f"campaign-cancel:{batch_id}"


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    status: CommandStatus
    result: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.status not in (CommandStatus.PENDING, CommandStatus.RUNNING)


async def _locked_batch(session: AsyncSession, batch_id: int) -> CampaignBatch:
    """The batch row, locked until the transaction ends (a second leader waits, then sees what we wrote)."""
    return (await session.exec(select(CampaignBatch).where(CampaignBatch.id == batch_id).with_for_update())).one()


async def reserve_reminder(session_factory: SessionFactory, item: TrackItem, now: datetime) -> str | None:
    """Write the reminder down and its command to the outbox in one transaction; the command's key, or None if
    the row moved on meanwhile (confirmed, or another leader reminded first)."""
    async with write_transaction(session_factory) as session:
        batch = await _locked_batch(session, item.batch_id)
        if batch.confirmed_at is not None or batch.status != BatchStatus.CREATED.value:
            return None
        known = list(batch.reminders or [])
        if len(known) != len(item.reminders):
            return None
        batch.reminders = [*known, now.isoformat()]
        batch.updated_at = now
        session.add(batch)
        key = remind_key(item.batch_id, len(batch.reminders))
        await enqueue(
            session,
            corp_id=batch.corp_id,
            kind=CommandKind.REMIND_GROUPMSG,
            key=key,
            payload={"msgid": item.msgid, "sender": item.sender},
            not_before=now,
            deadline=now + REMIND_DEADLINE,
        )
    return key


async def request_cancel(session_factory: SessionFactory, item: TrackItem, now: datetime) -> str:
    """Write the cancellation of the batch's task to the outbox (once per batch); its key."""
    key = cancel_key(item.batch_id)
    async with write_transaction(session_factory) as session:
        batch = await _locked_batch(session, item.batch_id)
        if batch.status == BatchStatus.CREATED.value:
            await enqueue(
                session,
                corp_id=batch.corp_id,
                kind=CommandKind.CANCEL_GROUPMSG,
                key=key,
                payload={"msgid": item.msgid, "sender": item.sender},
                not_before=now,
            )
    return key


async def command_outcome(session_factory: SessionFactory, key: str) -> CommandOutcome | None:
    """Where the command of ``key`` stands (None: there is none)."""
    async with session_factory() as session:
        row = (
            await session.exec(
                select(OutboxCommand.status, OutboxCommand.result).where(OutboxCommand.idempotency_key == key)
            )
        ).first()
    if row is None:
        return None
    status, result = row
    return CommandOutcome(CommandStatus(status), dict(result or {}))
