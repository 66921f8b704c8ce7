"""Reconciliation passes against the emulator: what callbacks missed comes in, once, and a pass resumes.

The world of ``test_fullsync`` (105 advisors in two batches, 130 customers, 3 groups) is mirrored by a full sync;
then WeCom changes without telling us (no callbacks) and reconciliation passes bring the database back to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.emulator.server import RunningEmulator, start_emulator
from bot.runtime.fullsync import FullSync
from bot.runtime.reconcile import PassInterrupted, ReconcileTick, Reconciliation
from bot.wecom.client import WeComClient, build_wecom_client
from bot.wecom.errors import RetryableError
from scrm.db import SessionFactory, transaction
from scrm.lifecycle import ContactAdded, LifecycleHooks
from scrm.models import AuditLog, CustomerGroup, FollowRelation, SyncCheckpoint
from scrm.sync.contacts import on_staff_deleted_by_contact
from tests.conftest import TEST_CORP_ID, make_settings
from tests.sync.helpers import rows
from tests.sync.test_fullsync import ADVISORS, BATCH, SECRET, _expected, _mirror, build_world

GROUP_GET = "externalcontact/groupchat/get"


@dataclass
class Told(LifecycleHooks):
    """The lifecycle hooks as the SOP sees them: which relations it was told were added."""

    added: list[ContactAdded]
    changed: list[str]

    async def contact_added(self, session: AsyncSession, corp_id: str, added: ContactAdded) -> None:
        self.added.append(added)

    async def subject_changed(
        self, session: AsyncSession, corp_id: str, subject_type: str, subject_id: str, at: datetime
    ) -> None:
        self.changed.append(subject_id)


@pytest.fixture
async def world() -> AsyncIterator[RunningEmulator]:
    async with await start_emulator(build_world()) as running:
        yield running


@pytest.fixture
async def client(world: RunningEmulator, database_url: str) -> AsyncIterator[WeComClient]:
    settings = make_settings(database_url=database_url, wecom_api_base=world.base_url, app_secret=SECRET)
    async with aiohttp.ClientSession() as http:
        yield build_wecom_client(settings, http, None)


async def _no_wait(_seconds: float) -> None:
    return None


def _pass(world: RunningEmulator, client: WeComClient, factory: SessionFactory, told: Told) -> Reconciliation:
    def now() -> datetime:
        return datetime.fromtimestamp(world.state.now(), UTC)

    return Reconciliation(client, factory, TEST_CORP_ID, hooks=told, now=now, backoff=_no_wait)


def _advance(world: RunningEmulator, seconds: float) -> None:
    world.state.clock.advance(seconds)  # type: ignore[attr-defined]


async def test_a_pass_brings_in_what_callbacks_missed_and_enrols_once(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    state = world.state
    await FullSync(client, session_factory, TEST_CORP_ID, backoff=_no_wait).run()
    told = Told([], [])
    calls = state.counters.api_calls[BATCH]
    assert (await _pass(world, client, session_factory, told).run_pass()).baseline
    assert state.counters.api_calls[BATCH] == calls  # the baseline reads nothing
    _advance(world, 60)

    # WeCom changes while nobody listens
    old = state.follows_of_staff(ADVISORS[0])[0]
    state.contact_deletes_staff(ADVISORS[0], old.external_userid)
    chat_ids = sorted(state.groups)
    state.join_group(chat_ids[0], [old.external_userid])
    state.dismiss_group(chat_ids[1])
    missed = str(state.add_contact(ADVISORS[101], "wm_missed", name="漏掉的客户")["ExternalUserID"])
    _advance(world, 40)
    fresh = str(state.add_contact(ADVISORS[1], "wm_fresh", name="刚加的客户")["ExternalUserID"])
    _advance(world, 2)

    first = await _pass(world, client, session_factory, told).run_pass()
    assert (first.enrolled, first.deleted, first.dismissed, first.groups) == (1, 1, 1, 2)
    assert first.deferred_newest == datetime.fromtimestamp(state.follows_of_contact(fresh)[0].createtime, UTC)
    assert [(a.external_userid, a.userid, a.welcome_code) for a in told.added] == [(missed, ADVISORS[101], "")]
    assert told.added[0].event_time == datetime.fromtimestamp(state.follows_of_contact(missed)[0].createtime, UTC)
    assert told.changed == [old.external_userid]
    mirror, expected = await _mirror(session_factory), _expected(state)
    expected["follows"].pop(fresh)  # its add callback may still come (with the welcome code): left to it
    expected["contacts"].pop(fresh)
    assert chat_ids[1] not in expected["groups"]  # WeCom lists no dismissed group; our row stays, dismissed
    mirror["groups"].pop(chat_ids[1])
    assert mirror == expected
    [group] = await rows(session_factory, CustomerGroup, CustomerGroup.chat_id == chat_ids[1])
    assert group.status == "dismissed"

    _advance(world, 31)
    second = await _pass(world, client, session_factory, told).run_pass()
    assert (second.enrolled, second.deleted, second.dismissed, second.deferred_newest) == (1, 0, 0, None)
    assert [a.external_userid for a in told.added] == [missed, fresh]  # nobody is told twice
    mirror = await _mirror(session_factory)
    mirror["groups"].pop(chat_ids[1])
    assert mirror == _expected(state)


async def test_the_deletion_callback_that_arrives_after_all_says_who_deleted(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    state = world.state
    await FullSync(client, session_factory, TEST_CORP_ID, backoff=_no_wait).run()
    told = Told([], [])
    await _pass(world, client, session_factory, told).run_pass()
    _advance(world, 60)
    gone = state.follows_of_staff(ADVISORS[2])[0].external_userid
    fields = state.contact_deletes_staff(ADVISORS[2], gone)
    _advance(world, 60)
    assert (await _pass(world, client, session_factory, told).run_pass()).deleted == 1
    where = (FollowRelation.external_userid == gone, FollowRelation.userid == ADVISORS[2])
    [relation] = await rows(session_factory, FollowRelation, *where)
    assert (relation.deleted_by, relation.deleted_source) == ("unknown", "reconcile")

    late = datetime.fromtimestamp(int(fields["CreateTime"]), UTC)
    for _ in range(2):  # the late callback, and its replay
        async with transaction(session_factory) as session:
            await on_staff_deleted_by_contact(
                session, TEST_CORP_ID, userid=ADVISORS[2], external_userid=gone, event_time=late
            )
    [relation] = await rows(session_factory, FollowRelation, *where)
    assert (relation.deleted_by, relation.deleted_at) == ("customer", late)
    churned = await rows(session_factory, AuditLog, AuditLog.action == "contact.churned", AuditLog.subject_id == gone)
    assert len(churned) == 1


async def test_an_interrupted_pass_resumes_after_its_last_checkpoint(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    state = world.state
    await FullSync(client, session_factory, TEST_CORP_ID, backoff=_no_wait).run()
    told = Told([], [])
    await _pass(world, client, session_factory, told).run_pass()
    _advance(world, 60)
    missed = str(state.add_contact(ADVISORS[0], "wm_late", name="迟到")["ExternalUserID"])
    _advance(world, 60)
    state.faults.burst(GROUP_GET, count=8, errcode=-1)  # WeCom busy through the groups step: the pass stops
    with pytest.raises(RetryableError):
        await _pass(world, client, session_factory, told).run_pass()
    assert [a.external_userid for a in told.added] == [missed]
    listings = state.counters.api_calls[BATCH]
    state.faults.clear()
    resumed = await _pass(world, client, session_factory, told).run_pass()
    assert state.counters.api_calls[BATCH] == listings  # the finished contacts step is not read again
    assert resumed.groups >= 1 and [a.external_userid for a in told.added] == [missed]
    assert await _mirror(session_factory) == _expected(state)
    again = await _pass(world, client, session_factory, told).run_pass()  # a new pass reads everything again
    assert state.counters.api_calls[BATCH] > listings and again.enrolled == 0


async def test_the_tick_runs_a_pass_at_leader_start_and_then_every_interval(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    state = world.state
    await FullSync(client, session_factory, TEST_CORP_ID, backoff=_no_wait).run()
    clock = {"now": 0.0}
    tick = ReconcileTick(
        client,
        session_factory,
        TEST_CORP_ID,
        hooks=Told([], []),
        every=timedelta(minutes=60),
        now=lambda: datetime.fromtimestamp(state.now(), UTC),
        monotonic=lambda: clock["now"],
    )

    async def tick_at(second: float) -> int:
        """Run the tick at ``second``; how many listings it made."""
        clock["now"] = second
        before = state.counters.api_calls[BATCH]
        await tick(datetime.now(UTC))
        return state.counters.api_calls[BATCH] - before

    assert await tick_at(0) == 0  # leader start on a database without a pass: the baseline only
    [baseline] = await rows(
        session_factory, SyncCheckpoint, SyncCheckpoint.step == "reconcile", SyncCheckpoint.scope == ""
    )
    assert baseline.done
    assert await tick_at(5) == 0
    assert await tick_at(100) > 0  # not leading for a while (or restarted): a pass at once
    for second in range(105, 3700, 5):
        assert await tick_at(second) == 0, second
    assert await tick_at(3700) > 0  # an hour after the last pass


async def test_a_pass_stops_at_a_checkpoint_when_the_process_stops(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    state = world.state
    await FullSync(client, session_factory, TEST_CORP_ID, backoff=_no_wait).run()
    told = Told([], [])
    await _pass(world, client, session_factory, told).run_pass()
    _advance(world, 60)
    stop = asyncio.Event()
    stop.set()
    stopping = Reconciliation(
        client, session_factory, TEST_CORP_ID, hooks=told, now=lambda: datetime.now(UTC), backoff=_no_wait, stop=stop
    )
    listings = state.counters.api_calls[BATCH]
    with pytest.raises(PassInterrupted):
        await stopping.run_pass()
    assert state.counters.api_calls[BATCH] == listings  # stopped before the first listing
    resumed = await _pass(world, client, session_factory, told).run_pass()
    assert not resumed.baseline and state.counters.api_calls[BATCH] > listings
