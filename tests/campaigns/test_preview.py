"""``campaign plan`` tells the same truth as the tick: in quiet hours the run waits for their end (not skipped)."""

from __future__ import annotations

from datetime import UTC, datetime

from scrm.campaigns.preview import preview_lines, preview_run
from scrm.campaigns.service import get_campaign, spec_of
from scrm.contact_policy import Caps, Policy, QuietHours
from scrm.db import SessionFactory
from scrm.models import RunStatus
from tests.campaigns.support import CampaignWorld, campaign_world, group_spec
from tests.conftest import TEST_CORP_ID

QUIET = Policy(quiet_hours=QuietHours(start="21:00", end="09:00"), caps=Caps(per_day=0, per_week=0))  # type: ignore[arg-type]
AT_0250 = datetime(2026, 12, 4, 18, 50, tzinfo=UTC)  # Saturday 02:50 China time
AT_0900 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 09:00 China time, the end of quiet hours


async def _preview(world: CampaignWorld, now: datetime, policy: Policy = QUIET) -> tuple[list[str], int, int]:
    async with world.sessions() as session:
        campaign = await get_campaign(session, TEST_CORP_ID, "friday")
        preview = await preview_run(session, campaign, spec_of(campaign), now=now, policy=policy, calls_per_minute=60)
        await session.rollback()
    lines = preview_lines(preview, "friday", policy, now, 60)
    return lines, len(preview.plan.batch_of), len(preview.plan.skipped)


async def test_plan_at_02_50_says_when_the_run_is_sent_and_skips_nothing(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=AT_0250) as world:
        world.policy = QUIET
        await world.seed_groups(owners=2, groups_per_owner=3)
        await world.save(group_spec())
        lines, planned, skipped = await _preview(world, AT_0250)
        assert lines[0] == "免打扰时段：将于 09:00 发送"
        assert lines[1] == "群发活动 friday：目标 6，计划发送 6，跳过 0"
        assert (planned, skipped) == (6, 0)
        assert await world.plan() == []  # the tick agrees: nothing is planned, nothing skipped, at 02:50
        assert await world.runs() == []
        world.clock.set(AT_0900)
        [run] = await world.plan()  # at 09:00 it sends what the preview said
        assert (run.status, run.targets, run.skipped) == (RunStatus.SENDING.value, planned, skipped)


async def test_outside_quiet_hours_the_plan_has_no_quiet_line(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=AT_0900) as world:
        await world.seed_groups(owners=1, groups_per_owner=2)
        await world.save(group_spec())
        lines, planned, skipped = await _preview(world, AT_0900)
        assert lines[0] == "群发活动 friday：目标 2，计划发送 2，跳过 0" and (planned, skipped) == (2, 0)


async def test_late_evening_names_the_next_day_and_an_expired_wait_is_said(session_factory: SessionFactory) -> None:
    evening = datetime(2026, 12, 4, 14, 30, tzinfo=UTC)  # 22:30 China time
    async with campaign_world(session_factory, start=evening) as world:
        await world.seed_groups(owners=1, groups_per_owner=1)
        await world.save(group_spec())
        lines, _, _ = await _preview(world, evening)
        assert lines[0] == "免打扰时段：将于 12月5日 09:00 发送"
        no_wait = QUIET.model_copy(update={"max_defer_days": 0})
        lines, _, _ = await _preview(world, evening, no_wait)
        assert lines[0] == "免打扰时段：等到结束已超过最长顺延天数，本次不会发送（记为跳过）"
