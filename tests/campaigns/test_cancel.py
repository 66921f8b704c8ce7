"""Cancelling a campaign: batches not yet at WeCom are withdrawn, tasks already created are cancelled at WeCom by
the tracking tick (what an owner already sent stays sent), a cron campaign fires no more, and a second cancel
changes nothing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import col, select

from bot.emulator.base import WorldError
from bot.emulator.group_owners import NEVER_CONFIRMS, GroupSendOwners, OwnerProfile
from scrm.campaigns.service import CampaignError, cancel, get_campaign
from scrm.campaigns.spec import CampaignSpec
from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import (
    AuditLog,
    BatchStatus,
    CampaignStatus,
    CommandStatus,
    OutboxCommand,
    RunStatus,
    TargetStatus,
)
from tests.campaigns.support import CampaignWorld, campaign_world, group_spec, owner_id, spec
from tests.conftest import TEST_CORP_ID

ADD = "externalcontact/add_msg_template"
CANCEL = "externalcontact/cancel_groupmsg_send"


async def do_cancel(world: CampaignWorld, code: str = "friday", *, by: str = "operator2") -> int:
    async with transaction(world.sessions) as session:
        return await cancel(session, TEST_CORP_ID, code, by=by, now=world.clock.utcnow())


async def commands(world: CampaignWorld) -> list[OutboxCommand]:
    async with world.sessions() as session:
        query = select(OutboxCommand).where(OutboxCommand.kind == CommandKind.ADD_MSG_TEMPLATE.value)
        return list((await session.exec(query.order_by(col(OutboxCommand.id)))).all())


async def started(world: CampaignWorld, *, owners: int = 3) -> None:
    """``owners`` owners with two groups each, and Friday's campaign planned (one batch per owner)."""
    await world.seed_groups(owners=owners, groups_per_owner=2)
    await world.save(group_spec())
    assert len(await world.plan()) == 1


async def test_cancel_before_the_outbox_ran_withdraws_every_batch(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await started(world)
        assert await do_cancel(world) == 3
        assert [(c.status, c.last_error) for c in await commands(world)] == [
            (CommandStatus.FAILED.value, "campaign cancelled before the call")
        ] * 3
        assert [b.status for b in await world.batches()] == [BatchStatus.CANCELLED.value] * 3
        targets = await world.targets()
        assert Counter((t.status, t.reason) for t in targets) == {(TargetStatus.CANCELLED.value, "cancelled"): 6}
        await world.dispatch_until_idle()
        await world.advance(120)
        await world.track()
        assert world.state.group_msgs == {}
        assert world.state.counters.api_calls[ADD] == 0
        [run] = await world.runs()
        assert run.status == RunStatus.CANCELLED.value
        assert run.finished_at == world.clock.utcnow()
        async with world.sessions() as session:
            campaign = await get_campaign(session, TEST_CORP_ID, "friday")
        assert (campaign.status, campaign.cancelled_by, campaign.next_run_at) == (
            CampaignStatus.CANCELLED.value,
            "operator2",
            None,
        )


@pytest.mark.parametrize("synced", [True, False], ids=["tasks-known", "tasks-not-yet-synced"])
async def test_cancel_after_the_tasks_exist_cancels_them_at_wecom(
    session_factory: SessionFactory, synced: bool
) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        await started(world)
        gone = world.chats[owner_id(0)][0]
        world.state.dismiss_group(gone)  # after planning: add_msg_template puts it in fail_list
        await world.dispatch_until_idle()
        assert len(world.state.group_msgs) == 3
        if synced:
            await world.track()  # the batches learn their msgids
            assert [b.status for b in await world.batches()] == [BatchStatus.CREATED.value] * 3
        assert await do_cancel(world) == 0  # nothing left to withdraw: the calls were made
        await world.track()
        if not synced:  # the tick first learns the msgids, then looks at the tasks a minute later
            await world.advance(61)
            await world.track()
        msgs = list(world.state.group_msgs.values())
        assert all(task.cancelled for msg in msgs for task in msg.tasks.values())
        assert world.state.counters.api_calls[CANCEL] == 3
        batches = await world.batches()
        assert [(b.status, b.results_final) for b in batches] == [(BatchStatus.CANCELLED.value, True)] * 3
        statuses = {t.target_id: (t.status, t.reason) for t in await world.targets()}
        assert statuses.pop(gone) == (TargetStatus.FAILED.value, "wecom_fail_list")  # not made "cancelled"
        assert set(statuses.values()) == {(TargetStatus.CANCELLED.value, "cancelled")}
        [run] = await world.runs()
        assert (run.status, run.finished_at) == (RunStatus.CANCELLED.value, world.clock.utcnow())
        owners = GroupSendOwners(world.state, {}, default=OwnerProfile(confirm_after=0))
        await world.advance(3600)
        assert owners.step() == 0  # owners find nothing left to send
        with pytest.raises(WorldError, match="cancelled"):
            world.state.confirm_groupmsg(msgs[0].msgid, msgs[0].creator)
        await world.track()
        assert world.state.counters.group_sends == []
        assert world.state.counters.api_calls[CANCEL] == 3  # never asked twice


async def test_owners_who_sent_before_the_cancel_stay_sent(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        await started(world, owners=4)
        owners = GroupSendOwners(
            world.state,
            {owner_id(0): OwnerProfile(confirm_after=60), owner_id(1): OwnerProfile(confirm_after=600)},
            default=NEVER_CONFIRMS,
        )
        await world.dispatch_until_idle()
        await world.track()
        await world.advance(300)
        assert owners.step() == 1  # owner 0 sent; tracked as sent below
        await world.track()
        assert await do_cancel(world) == 0
        await world.advance(300)
        assert owners.step() == 1  # owner 1 sends after the cancel, before the tick looked
        await world.track()
        by_owner: dict[str, set[str]] = {}
        for t in await world.targets():
            by_owner.setdefault(t.sender, set()).add(t.status)
        assert by_owner == {
            owner_id(0): {TargetStatus.SENT.value},
            owner_id(1): {TargetStatus.SENT.value},
            owner_id(2): {TargetStatus.CANCELLED.value},
            owner_id(3): {TargetStatus.CANCELLED.value},
        }
        batches = {b.sender: b for b in await world.batches()}
        assert [batches[owner_id(n)].status for n in range(4)] == [BatchStatus.CREATED.value] * 2 + [
            BatchStatus.CANCELLED.value
        ] * 2
        assert batches[owner_id(0)].confirmed_at is not None and batches[owner_id(1)].confirmed_at is not None
        assert all(b.results_final for b in batches.values())
        delivered = sorted(d.recipient for d in world.state.counters.group_sends)
        assert delivered == sorted(world.chats[owner_id(0)] + world.chats[owner_id(1)])
        assert world.state.counters.api_calls[CANCEL] == 2  # only the unsent tasks
        [run] = await world.runs()
        assert (run.status, run.finished_at) == (RunStatus.CANCELLED.value, world.clock.utcnow())


def cron_spec(code: str) -> CampaignSpec:
    return spec(
        f"""\
        code: {code}
        name: 每周五推送
        chat_type: group
        content: {{text: 周五好！}}
        schedule: {{cron: "0 19 * * 5"}}
        """
    )


async def test_cancelled_cron_campaign_fires_no_more(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:  # starts Friday 19:00, the first fire
        await world.seed_groups(owners=1, groups_per_owner=1)
        await world.save(cron_spec("weekly"))
        await world.save(cron_spec("control"))  # the same schedule, not cancelled
        assert sorted(r.slot for r in await world.plan()) == ["2026-12-04T19:00"] * 2
        await world.dispatch_until_idle()
        assert await do_cancel(world, "weekly") == 0
        planned: list[tuple[int, str]] = []
        for _ in range(3):  # three more Fridays
            world.clock.set(world.clock.utcnow() + timedelta(days=7, minutes=1))
            planned += [(r.campaign_id, r.slot) for r in await world.plan()]
        async with world.sessions() as session:
            weekly = await get_campaign(session, TEST_CORP_ID, "weekly")
            control = await get_campaign(session, TEST_CORP_ID, "control")
        assert (weekly.status, weekly.next_run_at) == (CampaignStatus.CANCELLED.value, None)
        assert control.status == CampaignStatus.SCHEDULED.value
        assert planned == [
            (control.id, "2026-12-11T19:00"),
            (control.id, "2026-12-18T19:00"),
            (control.id, "2026-12-25T19:00"),
        ]
        runs = [r for r in await world.runs() if r.campaign_id == weekly.id]
        assert [(r.slot, r.status) for r in runs] == [("2026-12-04T19:00", RunStatus.CANCELLED.value)]


async def test_cancel_twice_changes_nothing(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await started(world)
        first_at = world.clock.utcnow()
        assert await do_cancel(world) == 3
        before = [(c.status, c.last_error, c.updated_at) for c in await commands(world)]
        await world.advance(3600)
        assert await do_cancel(world, by="operator1") == 0
        assert [(c.status, c.last_error, c.updated_at) for c in await commands(world)] == before
        async with world.sessions() as session:
            campaign = await get_campaign(session, TEST_CORP_ID, "friday")
            audits = (
                await session.exec(
                    select(AuditLog.action, AuditLog.actor, AuditLog.detail).where(
                        AuditLog.action == "campaign.cancelled"
                    )
                )
            ).all()
        assert (campaign.cancelled_by, campaign.cancelled_at) == ("operator2", first_at)
        assert [(action, actor, (detail or {})["withdrawn"]) for action, actor, detail in audits] == [
            ("campaign.cancelled", "operator2", 3)
        ]
        with pytest.raises(CampaignError, match="没有编码为 nothing 的群发活动"):
            await do_cancel(world, "nothing")
