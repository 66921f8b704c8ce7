"""When campaign runs happen: cron recurrence across month and year ends, ``until``, ``at``, one run per slot,
missed fires, and quiet hours — run_due on a virtual clock, slots in China time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from scrm.campaigns.service import CampaignError, get_campaign
from scrm.campaigns.spec import CampaignSpec, slot_of
from scrm.contact_policy import Caps, Policy, QuietHours
from scrm.db import SessionFactory
from scrm.models import Campaign, CampaignStatus, OutboxCommand, RunStatus
from tests.campaigns.support import CampaignWorld, campaign_world, group_spec
from tests.conftest import TEST_CORP_ID


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


async def campaign(world: CampaignWorld, code: str = "recurring") -> Campaign:
    async with world.sessions() as session:
        return await get_campaign(session, TEST_CORP_ID, code)


async def save(world: CampaignWorld, schedule: dict[str, object], code: str = "recurring") -> Campaign:
    data = group_spec(code).stored()
    return await world.save(CampaignSpec.model_validate({**data, "schedule": schedule}))


async def fires_exactly_at(world: CampaignWorld, fire: datetime, slot: str) -> None:
    """Nothing is planned a second before ``fire``; at ``fire`` one run with ``slot``."""
    world.clock.set(fire - timedelta(seconds=1))
    assert await world.plan() == []
    world.clock.set(fire)
    [run] = await world.plan()
    assert (run.slot, run.fire_at, run.status) == (slot, fire, RunStatus.SENDING.value)


async def test_day_31_skips_the_months_without_one(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 1, 10)) as world:
        await world.seed_groups(owners=1, groups_per_owner=2)
        saved = await save(world, {"cron": "0 19 31 * *"})
        assert saved.next_run_at == utc(2026, 1, 31, 11)
        for fire, slot, following in [
            (utc(2026, 1, 31, 11), "2026-01-31T19:00", utc(2026, 3, 31, 11)),  # no February 31st
            (utc(2026, 3, 31, 11), "2026-03-31T19:00", utc(2026, 5, 31, 11)),  # nor April 31st
            (utc(2026, 5, 31, 11), "2026-05-31T19:00", utc(2026, 7, 31, 11)),
        ]:
            await fires_exactly_at(world, fire, slot)
            assert (await campaign(world)).next_run_at == following
        assert [r.slot for r in await world.runs()] == ["2026-01-31T19:00", "2026-03-31T19:00", "2026-05-31T19:00"]


async def test_first_of_the_month_crosses_the_year_end(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 11, 20)) as world:
        await world.seed_groups(owners=1, groups_per_owner=1)
        await save(world, {"cron": "0 10 1 * *"})
        for fire, slot in [
            (utc(2026, 12, 1, 2), "2026-12-01T10:00"),
            (utc(2027, 1, 1, 2), "2027-01-01T10:00"),
            (utc(2027, 2, 1, 2), "2027-02-01T10:00"),
        ]:
            await fires_exactly_at(world, fire, slot)
        assert (await campaign(world)).next_run_at == utc(2027, 3, 1, 2)


async def test_slots_are_local_times(session_factory: SessionFactory) -> None:
    assert slot_of(utc(2026, 12, 31, 15, 30), "cron") == "2026-12-31T23:30"
    assert slot_of(utc(2026, 12, 31, 16, 30), "at") == "2027-01-01T00:30"
    assert slot_of(utc(2026, 12, 31, 16, 30), "now") == "now"
    async with campaign_world(session_factory, start=utc(2026, 12, 1)) as world:
        await world.seed_groups(owners=1, groups_per_owner=1)
        await save(world, {"cron": "30 23 31 12 *"})
        await fires_exactly_at(world, utc(2026, 12, 31, 15, 30), "2026-12-31T23:30")
        [batch] = await world.batches()
        assert batch.key.endswith(":2026-12-31T23:30:0")
        assert (await campaign(world)).next_run_at == utc(2027, 12, 31, 15, 30)


async def test_until_ends_a_cron_campaign(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 11, 20)) as world:
        await world.seed_groups(owners=1, groups_per_owner=1)
        await save(world, {"cron": "0 10 1 * *", "until": "2027-01-01"})  # inclusive: January 1st still fires
        await fires_exactly_at(world, utc(2026, 12, 1, 2), "2026-12-01T10:00")
        assert (await campaign(world)).status == CampaignStatus.SCHEDULED.value
        await fires_exactly_at(world, utc(2027, 1, 1, 2), "2027-01-01T10:00")
        ended = await campaign(world)
        assert (ended.status, ended.next_run_at) == (CampaignStatus.DONE.value, None)
        world.clock.set(utc(2027, 2, 1, 2))
        assert await world.plan() == []
        assert len(await world.runs()) == 2


async def test_one_run_per_slot(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 12, 1)) as world:
        await world.seed_groups(owners=2, groups_per_owner=2)
        await save(world, {"cron": "0 10 * * *"})
        world.clock.set(utc(2026, 12, 1, 2))
        assert len(await world.plan()) == 1
        assert await world.plan() == []  # the same instant again: the slot is planned already
        assert len(await world.runs()) == 1 and len(await world.batches()) == 2
        async with world.sessions() as session:
            assert len((await session.exec(select(OutboxCommand))).all()) == 2


async def test_missed_fires_are_not_sent_late(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 12, 1)) as world:
        await world.seed_groups(owners=1, groups_per_owner=1)
        await save(world, {"cron": "0 10 * * *"})  # daily at 10:00; nothing runs from Dec 1 to Dec 5 evening
        world.clock.set(utc(2026, 12, 5, 12))  # 20:00 local: five fires have passed
        [run] = await world.plan()
        assert run.slot == "2026-12-05T10:00"  # the latest fire, not the first one missed
        following = (await campaign(world)).next_run_at
        assert following == utc(2026, 12, 6, 2) and following > world.clock.utcnow()
        assert await world.plan() == []
        assert [r.slot for r in await world.runs()] == ["2026-12-05T10:00"]


async def test_an_at_campaign_runs_once_at_its_time(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 12, 4, 3)) as world:
        await world.seed_groups(owners=1, groups_per_owner=1)
        saved = await save(world, {"at": "2026-12-05 19:00"}, code="saturday")
        assert saved.next_run_at == utc(2026, 12, 5, 11)
        assert await world.plan() == []  # a day and a half early
        await fires_exactly_at(world, utc(2026, 12, 5, 11), "2026-12-05T19:00")
        done = await campaign(world, "saturday")
        assert (done.status, done.next_run_at) == (CampaignStatus.DONE.value, None)
        world.clock.set(utc(2026, 12, 12, 11))
        assert await world.plan() == []
        assert len(await world.runs()) == 1


def quiet_policy(max_defer_days: int = 7) -> Policy:
    return Policy(
        quiet_hours=QuietHours(start="21:00", end="09:00"),
        caps=Caps(per_day=0, per_week=0),
        max_defer_days=max_defer_days,
    )


async def test_a_fire_in_quiet_hours_waits_for_their_end(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 12, 4, 10)) as world:
        world.policy = quiet_policy()
        await world.seed_groups(owners=1, groups_per_owner=2)
        await save(world, {"cron": "0 22 * * *"})
        for at in (utc(2026, 12, 4, 14), utc(2026, 12, 4, 18), utc(2026, 12, 5, 0, 59, 59)):  # 22:00, 02:00, 08:59:59
            world.clock.set(at)
            assert await world.plan() == []
        world.clock.set(utc(2026, 12, 5, 1))  # 09:00 local
        [run] = await world.plan()
        assert (run.slot, run.fire_at, run.planned_at) == (
            "2026-12-04T22:00",
            utc(2026, 12, 4, 14),
            utc(2026, 12, 5, 1),
        )
        assert (run.status, run.batches) == (RunStatus.SENDING.value, 1)
        assert (await campaign(world)).next_run_at == utc(2026, 12, 5, 14)  # tonight's fire, deferred in turn


async def test_no_deferral_allowed_records_the_run_as_skipped(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 12, 4, 10)) as world:
        world.policy = quiet_policy(max_defer_days=0)
        await world.seed_groups(owners=1, groups_per_owner=2)
        await save(world, {"cron": "0 22 * * *"})
        world.clock.set(utc(2026, 12, 4, 14))
        assert await world.plan() == []
        [run] = await world.runs()
        assert (run.slot, run.status, run.targets, run.batches) == ("2026-12-04T22:00", RunStatus.SKIPPED.value, 0, 0)
        assert run.note == "超过最长顺延天数（免打扰时段）" and run.finished_at == utc(2026, 12, 4, 14)
        assert (await campaign(world)).next_run_at == utc(2026, 12, 5, 14)
        world.clock.set(utc(2026, 12, 5, 1))  # 09:00: the skipped slot is not sent after all
        assert await world.plan() == []
        assert await world.batches() == [] and len(await world.runs()) == 1


async def test_an_until_before_the_first_fire_is_refused(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, start=utc(2026, 12, 4, 12)) as world:
        with pytest.raises(CampaignError, match="早于第一次发送时间"):
            await save(world, {"cron": "0 19 * * 5", "until": "2026-12-04"})
        async with world.sessions() as session:
            assert (await session.exec(select(Campaign))).all() == []
