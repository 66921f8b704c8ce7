"""Reminders and cancellations are outbox commands written with the tracking state that decides them, under keys
that name the side effect: a tick that dies after the commit leaves the command to the dispatcher, and a second
leader holding the same stale view of a batch writes and sends nothing."""

from __future__ import annotations

from sqlmodel import col, select

from bot.emulator.group_owners import NEVER_CONFIRMS, GroupSendOwners
from scrm.campaigns import task_commands
from scrm.campaigns.service import cancel
from scrm.campaigns.tracking import claim_for_tracking
from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import BatchStatus, CommandStatus, OutboxCommand
from tests.campaigns.support import CampaignWorld, campaign_world, group_spec, owner_id
from tests.conftest import TEST_CORP_ID

REMIND_API = "externalcontact/remind_groupmsg_send"
CANCEL_API = "externalcontact/cancel_groupmsg_send"
HOUR = 3600.0


async def task_commands_of(world: CampaignWorld) -> list[tuple[str, str, str]]:
    kinds = (CommandKind.REMIND_GROUPMSG.value, CommandKind.CANCEL_GROUPMSG.value)
    async with world.sessions() as session:
        rows = await session.exec(
            select(OutboxCommand.kind, OutboxCommand.idempotency_key, OutboxCommand.status)
            .where(col(OutboxCommand.kind).in_(kinds))
            .order_by(col(OutboxCommand.id))
        )
        return [tuple(row) for row in rows.all()]


async def one_created_batch(world: CampaignWorld) -> int:
    """One owner who never confirms, one group, a task created at WeCom and known to its batch; the batch id."""
    await world.seed_groups(owners=1, groups_per_owner=1)
    await world.save(group_spec(extra="remind: {after: 1h, max: 3}\n"))
    GroupSendOwners(world.state, {owner_id(0): NEVER_CONFIRMS})
    assert len(await world.plan()) == 1
    await world.dispatch_until_idle()
    await world.track()  # the batch learns its msgid
    [batch] = await world.batches()
    assert batch.status == BatchStatus.CREATED.value and batch.id is not None
    return batch.id


async def test_a_reminder_is_an_outbox_command_run_by_the_tick(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        batch_id = await one_created_batch(world)
        await world.advance(HOUR + 1)
        await world.track()
        assert await task_commands_of(world) == [
            (CommandKind.REMIND_GROUPMSG.value, f"campaign-remind:{batch_id}:1", CommandStatus.DONE.value)
        ]
        assert world.state.counters.api_calls[REMIND_API] == 1
        [batch] = await world.batches()
        assert len(batch.reminders or []) == 1


async def test_a_tick_that_dies_after_the_commit_leaves_the_reminder_to_the_dispatcher(
    session_factory: SessionFactory,
) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        batch_id = await one_created_batch(world)
        await world.advance(HOUR + 1)
        now = world.clock.utcnow()
        [item] = await claim_for_tracking(world.sessions, now)
        key = await task_commands.reserve_reminder(world.sessions, item, now)  # committed; then the tick died
        assert key == f"campaign-remind:{batch_id}:1"
        assert world.state.counters.api_calls[REMIND_API] == 0
        # a second leader with the same view of the batch: the reminder is taken, nothing is written or sent
        assert await task_commands.reserve_reminder(world.sessions, item, now) is None
        assert await world.dispatcher.run_once() == 1
        assert world.state.counters.api_calls[REMIND_API] == 1
        await world.advance(300)
        await world.track()  # the next pass knows the reminder: no second one before the next is due
        assert world.state.counters.api_calls[REMIND_API] == 1
        assert await task_commands_of(world) == [(CommandKind.REMIND_GROUPMSG.value, key, CommandStatus.DONE.value)]
        [batch] = await world.batches()
        assert len(batch.reminders or []) == 1


async def test_a_cancellation_is_one_outbox_command_per_batch(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        batch_id = await one_created_batch(world)
        async with transaction(world.sessions) as session:
            await cancel(session, TEST_CORP_ID, "friday", by="operator2", now=world.clock.utcnow())
        now = world.clock.utcnow()
        await world.advance(61)
        [item] = await claim_for_tracking(world.sessions, world.clock.utcnow())
        key = await task_commands.request_cancel(world.sessions, item, now)
        assert await task_commands.request_cancel(world.sessions, item, now) == key  # the same command, once
        await world.advance(121)  # the claim's lease
        await world.track()  # the next pass runs it, then cancels the batch
        assert await task_commands_of(world) == [
            (CommandKind.CANCEL_GROUPMSG.value, f"campaign-cancel:{batch_id}", CommandStatus.DONE.value)
        ]
        assert world.state.counters.api_calls[CANCEL_API] == 1
        [batch] = await world.batches()
        assert batch.status == BatchStatus.CANCELLED.value
