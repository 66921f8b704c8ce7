"""A campaign from file to delivered messages: plan, outbox, WeCom tasks, owners confirming, tracking."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import update
from sqlmodel import col

from scrm.db import SessionFactory, transaction
from scrm.models import BatchStatus, Campaign, CampaignStatus, RunStatus, TargetStatus
from tests.campaigns.support import campaign_world, group_spec


async def test_group_campaign_reaches_every_group_once(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await world.seed_groups(owners=5, groups_per_owner=4, dealers=2)
        await world.save(group_spec())
        runs = await world.plan()
        assert [r.slot for r in runs] == ["now"]
        await world.dispatch_until_idle()
        await world.track()  # batches learn their msgid
        await world.advance(61)
        await world.track()  # confirmations (auto) and results
        batches = await world.batches()
        assert [b.status for b in batches] == [BatchStatus.CREATED.value] * 5
        assert all(b.results_final for b in batches)
        targets = await world.targets()
        assert Counter(t.status for t in targets) == {TargetStatus.SENT.value: 20}
        coverage = world.state.group_send_coverage("group")
        assert sorted(coverage) == sorted(t.target_id for t in targets)
        assert all(len(msgids) == 1 for msgids in coverage.values())
        assert [r.status for r in await world.runs()] == [RunStatus.DONE.value]
        texts = {d.text for d in world.state.counters.group_sends}
        assert texts == {"经销商000周末试驾日，欢迎到店！", "经销商001周末试驾日，欢迎到店！"}


async def test_the_planned_run_carries_its_counts(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await world.seed_groups(owners=2, groups_per_owner=3)
        await world.save(group_spec())
        [run] = await world.plan()
        assert (run.targets, run.skipped, run.batches, run.status) == (6, 0, 2, RunStatus.SENDING.value)


async def test_a_stored_campaign_this_build_cannot_read_is_skipped_and_the_others_run(
    session_factory: SessionFactory,
) -> None:
    async with campaign_world(session_factory) as world:
        await world.seed_groups(owners=1, groups_per_owner=2)
        broken = await world.save(group_spec("broken"))
        fine = await world.save(group_spec("fine"))
        async with transaction(session_factory) as session:
            await session.exec(
                update(Campaign).where(col(Campaign.id) == broken.id).values(spec={"code": "broken", "nonsense": 1})
            )
        runs = await world.plan()
        assert [r.campaign_id for r in runs] == [fine.id]
        async with session_factory() as session:
            left = await session.get(Campaign, broken.id)
        assert left is not None and left.status == CampaignStatus.SCHEDULED.value  # untouched, logged
