"""Tracking group-send tasks with simulated owners (bot.emulator.group_owners) on the virtual clock: who
confirmed and what was delivered, reminders (spacing, campaign maximum, WeCom's three per 24 h, quiet hours),
giving up after three days, dismissed groups, the run's status, and how often WeCom is polled."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select

from bot.emulator.group_owners import NEVER_CONFIRMS, GroupSendOwners, OwnerProfile
from scrm.campaigns.tracking import (
    DEFAULT_POLL,
    EARLY_PHASE,
    GIVE_UP_AFTER,
    PollTimes,
    TrackItem,
    given_up,
    next_poll,
    reminder_due_at,
)
from scrm.contact_policy import Caps, Policy, QuietHours
from scrm.db import SessionFactory
from scrm.models import BatchStatus, CampaignBatch, CommandStatus, OutboxCommand, RunStatus, TargetStatus
from scrm.timing import CHINA_TZ
from tests.campaigns.support import FRIDAY_7PM, CampaignWorld, campaign_world, group_spec, owner_id

TASK_API = "externalcontact/get_groupmsg_task"
REMIND_API = "externalcontact/remind_groupmsg_send"
MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0
QUIET_POLICY = Policy(quiet_hours=QuietHours(start="21:00", end="09:00"), caps=Caps(per_day=0, per_week=0))


@dataclass
class Trace:
    """What the loop saw: every reminder time the emulator recorded (it forgets those older than 24 h), the
    cumulative get_groupmsg_task count after each tick, and each change of the run's status."""

    reminders: dict[str, set[float]] = field(default_factory=dict)  # msgid → times
    task_calls: list[tuple[float, int]] = field(default_factory=list)
    run_status: list[str] = field(default_factory=list)
    ticks: int = 0

    def poll_times(self) -> list[float]:
        times, seen = [], 0
        for at, count in self.task_calls:
            times += [at] * (count - seen)
            seen = count
        return times

    def reminders_of(self, msgid: str) -> list[float]:
        return sorted(self.reminders.get(msgid, set()))


def _ts(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


async def _next_due(world: CampaignWorld) -> float | None:
    """The earliest pending outbox command or batch poll in the database."""
    async with world.sessions() as session:
        command = (
            await session.exec(
                select(func.min(OutboxCommand.not_before)).where(
                    col(OutboxCommand.status) == CommandStatus.PENDING.value
                )
            )
        ).one()
        poll = (
            await session.exec(
                select(func.min(CampaignBatch.next_track_at)).where(
                    CampaignBatch.status == BatchStatus.CREATED.value, col(CampaignBatch.results_final).is_(False)
                )
            )
        ).one()
    known = [t for t in (_ts(command), _ts(poll)) if t is not None]
    return min(known) if known else None


async def drive(
    world: CampaignWorld, owners: GroupSendOwners, hours: float, trace: Trace, *, max_step: float | None = None
) -> Trace:
    """Run outbox, owners and tracking for ``hours`` of virtual time. The clock jumps to the next thing due
    (a command, a poll, an owner's confirmation; whole seconds, at least one), or by ``max_step`` at most."""
    until = world.clock.now() + hours * HOUR
    while True:
        now = world.clock.now()
        while await world.dispatcher.run_once():
            pass
        owners.step()
        await world.track()
        trace.ticks += 1
        for msg in world.state.group_msgs.values():
            trace.reminders.setdefault(msg.msgid, set()).update(msg.reminders)
        trace.task_calls.append((now, world.state.counters.api_calls[TASK_API]))
        status = (await world.runs())[-1].status
        if not trace.run_status or trace.run_status[-1] != status:
            trace.run_status.append(status)
        if now >= until:
            return trace
        candidates = [until] + [t for t in (await _next_due(world), owners.next_due()) if t is not None]
        step = max(math.ceil(min(candidates)), now + 1) - now
        world.clock.advance(min(step, max_step) if max_step else step)


async def started(
    world: CampaignWorld, profiles: Mapping[str, OwnerProfile], *, remind: str = "", groups: int = 1
) -> GroupSendOwners:
    await world.seed_groups(owners=len(profiles), groups_per_owner=groups)
    await world.save(group_spec(extra=f"remind: {remind}\n" if remind else ""))
    owners = GroupSendOwners(world.state, profiles)
    assert len(await world.plan()) == 1
    return owners


def msg_of(world: CampaignWorld, sender: str) -> str:
    [msgid] = [m.msgid for m in world.state.group_msgs.values() if m.creator == sender]
    return msgid


def poll_bound(waited: float, reminders: int) -> float:
    """Most get_groupmsg_task calls one batch may take while its owner waits ``waited`` seconds: every 5 min for
    two hours, then every 30 min, one more per reminder, plus the first look and the one that sees it sent."""
    early = min(waited, EARLY_PHASE.total_seconds())
    return (
        early / DEFAULT_POLL.early.total_seconds()
        + (waited - early) / DEFAULT_POLL.late.total_seconds()
        + reminders
        + 2
    )


def at_most_three_a_day(times: list[float]) -> bool:
    return all(sum(1 for t in times if start <= t < start + DAY) <= 3 for start in times)


async def test_owners_confirm_at_their_own_pace(session_factory: SessionFactory) -> None:
    """Four kinds of owners, remind after 2 h (the default); ticks of at most a minute for five hours."""
    async with campaign_world(session_factory, auto_confirm=False) as world:
        profiles = {
            owner_id(0): OwnerProfile(confirm_after=90),
            owner_id(1): OwnerProfile(confirm_after=30 * MINUTE),
            owner_id(2): OwnerProfile(confirm_after=None, after_reminder=5 * MINUTE),
            owner_id(3): OwnerProfile(confirm_after=3 * HOUR),
        }
        owners = await started(world, profiles, groups=2)
        dismissed = world.chats[owner_id(1)][0]
        trace = Trace(run_status=[run.status for run in await world.runs()])  # as planned
        await drive(world, owners, 0, trace)  # the tasks exist
        world.state.dismiss_group(dismissed)  # before its owner confirms
        await drive(world, owners, 5, trace, max_step=MINUTE)
        assert trace.run_status == [RunStatus.SENDING.value, RunStatus.TRACKING.value, RunStatus.DONE.value]
        batches = {b.sender: b for b in await world.batches()}
        for userid in profiles:
            msg = world.state.group_msgs[msg_of(world, userid)]
            task = msg.tasks[userid]
            batch = batches[userid]
            assert batch.confirmed_at == datetime.fromtimestamp(task.send_time, UTC)
            assert (batch.status, batch.results_final) == (BatchStatus.CREATED.value, True)
            assert [datetime.fromisoformat(r).timestamp() for r in batch.reminders or []] == trace.reminders_of(
                msg.msgid
            )
        created = {u: world.state.group_msgs[msg_of(world, u)].created_at for u in profiles}
        sent_at = {u: world.state.group_msgs[msg_of(world, u)].tasks[u].send_time for u in profiles}
        assert sent_at[owner_id(0)] == int(created[owner_id(0)] + 90)
        assert sent_at[owner_id(1)] == int(created[owner_id(1)] + 30 * MINUTE)
        assert sent_at[owner_id(3)] == int(created[owner_id(3)] + 3 * HOUR)
        # owner 2 confirms five minutes after the 2 h reminder; owner 3 got that reminder too, and no second one
        assert trace.reminders_of(msg_of(world, owner_id(0))) == trace.reminders_of(msg_of(world, owner_id(1))) == []
        [reminded] = trace.reminders_of(msg_of(world, owner_id(2)))
        assert reminded == created[owner_id(2)] + 2 * HOUR
        assert [(a.userid, a.why, a.at) for a in owners.did("reminder")] == [(owner_id(2), "reminder", reminded + 300)]
        assert trace.reminders_of(msg_of(world, owner_id(3))) == [created[owner_id(3)] + 2 * HOUR]
        statuses = {t.target_id: t.status for t in await world.targets()}
        expected = {cid: TargetStatus.SENT.value for chats in world.chats.values() for cid in chats}
        expected[dismissed] = TargetStatus.NOT_FRIEND.value
        assert statuses == expected
        assert sorted(d.recipient for d in world.state.counters.group_sends) == sorted(
            cid for cid in expected if cid != dismissed
        )
        # each confirmation was noticed within one poll interval (5 min young, 30 min after two hours)
        for target in await world.targets():
            confirmed = batches[target.sender].confirmed_at
            assert confirmed is not None
            limit = (
                DEFAULT_POLL.early if confirmed - batches[target.sender].created_at < EARLY_PHASE else DEFAULT_POLL.late
            )
            assert timedelta(0) <= target.updated_at - confirmed <= limit
        # polled at the documented cadence (not on each one-minute tick), then never again once all was final
        polls = trace.poll_times()
        bound = sum(poll_bound(sent_at[u] - created[u], len(trace.reminders_of(msg_of(world, u)))) for u in profiles)
        assert len(polls) <= bound, (len(polls), bound)
        assert trace.ticks >= 5 * 60
        assert max(polls) < world.clock.now() - HOUR


async def test_reminders_for_an_owner_who_never_confirms(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        owners = await started(world, {owner_id(0): NEVER_CONFIRMS}, remind="{after: 30m, max: 4}", groups=2)
        trace = await drive(world, owners, 75, Trace())
        msgid = msg_of(world, owner_id(0))
        created = world.state.group_msgs[msgid].created_at
        reminders = trace.reminders_of(msgid)
        # every 30 min, then WeCom's 3 per 24 h holds the fourth back to 24 h after the first; max 4 in total
        assert [r - created for r in reminders] == [30 * MINUTE, 60 * MINUTE, 90 * MINUTE, DAY + 31 * MINUTE]
        assert at_most_three_a_day(reminders)
        assert world.state.counters.api_calls[REMIND_API] == 4
        assert not any(path == REMIND_API for path, _ in world.state.counters.api_errors)
        [batch] = await world.batches()
        assert [datetime.fromisoformat(r).timestamp() for r in batch.reminders or []] == reminders
        # given up after three days: results read once more, targets stay unsent, the run is done
        assert (batch.results_final, batch.confirmed_at, batch.next_track_at) == (True, None, None)
        assert {t.status for t in await world.targets()} == {TargetStatus.UNSENT.value}
        [run] = await world.runs()
        assert run.status == RunStatus.DONE.value and run.finished_at is not None
        gave_up = run.finished_at.timestamp() - batch.created_at.timestamp()
        assert GIVE_UP_AFTER.total_seconds() <= gave_up <= GIVE_UP_AFTER.total_seconds() + DEFAULT_POLL.late.seconds
        # poll cadence: every 5 min while young, every 30 min later, never more often between reminders
        polls = trace.poll_times()
        assert polls[0] == created + 60  # first look a minute after the task exists
        gaps = [b - a for a, b in itertools.pairwise(polls)]
        young = created + EARLY_PHASE.total_seconds()
        assert all(g <= 5 * MINUTE for a, g in zip(polls, gaps, strict=False) if a < young)
        assert all(g <= 30 * MINUTE for g in gaps)
        for start, end in itertools.pairwise(reminders):
            between = [p for p in polls if start < p < end]
            early_part = max(0.0, min(end, young) - start)
            bound = early_part / (5 * MINUTE) + (end - start - early_part) / (30 * MINUTE) + 2
            assert len(between) <= bound, (start - created, end - created, len(between))
        assert len(polls) <= 2 * HOUR / (5 * MINUTE) + 73 * HOUR / (30 * MINUTE) + len(reminders) + 2
        assert polls[-1] <= run.finished_at.timestamp()  # nothing after giving up


async def test_no_reminder_in_quiet_hours(session_factory: SessionFactory) -> None:
    """Friday 20:00 China time, remind after 30 min, quiet from 21:00 to 09:00."""
    async with campaign_world(session_factory, start=FRIDAY_7PM + timedelta(hours=1), auto_confirm=False) as world:
        world.policy = QUIET_POLICY
        owners = await started(world, {owner_id(0): NEVER_CONFIRMS}, remind="{after: 30m, max: 10}")
        trace = await drive(world, owners, 64, Trace())  # until Monday 12:00
        reminders = [datetime.fromtimestamp(r, CHINA_TZ) for r in trace.reminders_of(msg_of(world, owner_id(0)))]
        assert reminders, "no reminder at all"
        assert all(9 <= r.hour < 21 for r in reminders), reminders
        assert reminders[0] == datetime(2026, 12, 4, 20, 30, tzinfo=CHINA_TZ)
        saturday = [r for r in reminders if r.day == 5]
        assert (
            datetime(2026, 12, 5, 9, 0, tzinfo=CHINA_TZ) <= saturday[0] < datetime(2026, 12, 5, 9, 30, tzinfo=CHINA_TZ)
        )
        assert at_most_three_a_day([r.timestamp() for r in reminders])
        assert not any(path == REMIND_API for path, _ in world.state.counters.api_errors)
        assert {r.date().day for r in reminders} == {4, 5, 6, 7}  # reminded every day it was allowed to


async def test_owner_confirms_only_after_a_reminder(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory, auto_confirm=False) as world:
        profiles = {owner_id(0): OwnerProfile(confirm_after=None, after_reminder=10 * MINUTE)}
        owners = await started(world, profiles, remind="{after: 1h, max: 3}", groups=3)
        trace = await drive(world, owners, 4, Trace())
        msgid = msg_of(world, owner_id(0))
        created = world.state.group_msgs[msgid].created_at
        assert [r - created for r in trace.reminders_of(msgid)] == [HOUR]  # none once confirmed
        [action] = owners.actions
        assert (action.why, action.at - created) == ("reminder", HOUR + 10 * MINUTE)
        [batch] = await world.batches()
        assert batch.confirmed_at == datetime.fromtimestamp(created + HOUR + 10 * MINUTE, UTC)
        assert {t.status for t in await world.targets()} == {TargetStatus.SENT.value}
        assert len(world.state.counters.group_sends) == 3
        assert trace.run_status[-1] == RunStatus.DONE.value


async def test_reminders_count_from_each_task_not_from_planning(session_factory: SessionFactory) -> None:
    """Paced at one call a minute, the third owner's task exists two minutes after the first: each task gets its
    first reminder ``remind.after`` after it was created."""
    async with campaign_world(session_factory, auto_confirm=False) as world:
        world.calls_per_minute = 1
        profiles = {owner_id(n): NEVER_CONFIRMS for n in range(3)}
        owners = await started(world, profiles, remind="{after: 30m, max: 1}")
        trace = await drive(world, owners, 1, Trace())
        created = {u: world.state.group_msgs[msg_of(world, u)].created_at for u in profiles}
        assert created[owner_id(2)] - created[owner_id(0)] >= 2 * MINUTE
        for userid in profiles:
            [reminded] = trace.reminders_of(msg_of(world, userid))
            assert reminded - created[userid] == 30 * MINUTE, userid


# ---- the pure rules ------------------------------------------------------------------------------------------

T0 = FRIDAY_7PM


def item(
    *reminders: timedelta, after: timedelta = timedelta(hours=2), most: int = 3, confirmed: bool = False
) -> TrackItem:
    return TrackItem(
        batch_id=1,
        run_id=1,
        batch_no=0,
        msgid="msg1",
        sender=owner_id(0),
        chat_type="group",
        created_at=T0,
        confirmed_at=T0 + timedelta(minutes=5) if confirmed else None,
        reminders=tuple(T0 + r for r in reminders),
        remind_after=after,
        remind_max=most,
        cancelled=False,
    )


def test_reminder_due_at() -> None:
    h, m = timedelta(hours=1), timedelta(minutes=1)
    assert reminder_due_at(item()) == T0 + 2 * h
    assert reminder_due_at(item(2 * h)) == T0 + 4 * h
    assert reminder_due_at(item(2 * h + 7 * m, 5 * h)) == T0 + 7 * h  # from the latest one
    assert reminder_due_at(item(5 * h, 2 * h)) == T0 + 7 * h  # order of the stored times does not matter
    assert reminder_due_at(item(2 * h, 4 * h, 6 * h)) is None  # max 3 used up
    assert reminder_due_at(item(most=0)) is None
    # three within 24 h: the fourth waits until 24 h after the earliest of them
    thirty = timedelta(minutes=30)
    assert reminder_due_at(item(30 * m, 60 * m, 90 * m, after=thirty, most=10)) == T0 + 24 * h + 31 * m
    assert reminder_due_at(item(90 * m, 30 * m, 60 * m, after=thirty, most=10)) == T0 + 24 * h + 31 * m
    # … and only the latest three count
    assert reminder_due_at(item(0 * h, 1 * h, 2 * h, 30 * h, after=thirty, most=10)) == T0 + 30 * h + 30 * m
    assert reminder_due_at(item(0 * h, 20 * h, 23 * h, after=thirty, most=10)) == T0 + 24 * h + m
    assert reminder_due_at(item(0 * h, 20 * h, 25 * h, after=thirty, most=10)) == T0 + 25 * h + 30 * m
    assert reminder_due_at(item(0 * h, 20 * h, after=thirty, most=10)) == T0 + 20 * h + 30 * m  # two: no wait


def test_next_poll() -> None:
    m = timedelta(minutes=1)
    assert next_poll(item(), T0 + m) == T0 + 6 * m  # young: every 5 min
    assert next_poll(item(), T0 + 2 * EARLY_PHASE) == T0 + 2 * EARLY_PHASE + 30 * m  # later: every 30 min
    assert next_poll(item(), T0 + EARLY_PHASE - 2 * m) == T0 + EARLY_PHASE  # the reminder comes first
    assert next_poll(item(after=3 * m), T0 + m) == T0 + 3 * m
    assert next_poll(item(after=3 * m), T0 + 4 * m) == T0 + 9 * m  # a reminder overdue (quiet hours) waits
    assert next_poll(item(timedelta(hours=3), most=1), T0 + 4 * EARLY_PHASE) == T0 + 4 * EARLY_PHASE + 30 * m
    fast = PollTimes(early=timedelta(seconds=20))
    assert (fast.first, fast.late) == (timedelta(seconds=20), timedelta(minutes=2))
    assert (DEFAULT_POLL.first, DEFAULT_POLL.late) == (m, 30 * m)
    assert next_poll(item(), T0 + m, fast) == T0 + m + timedelta(seconds=20)
    assert next_poll(item(), T0 + 3 * EARLY_PHASE, fast) == T0 + 3 * EARLY_PHASE + 2 * m


def test_given_up() -> None:
    second = timedelta(seconds=1)
    assert timedelta(days=3) == GIVE_UP_AFTER  # the documented rule
    assert not given_up(item(), T0 + GIVE_UP_AFTER - second)
    assert given_up(item(), T0 + GIVE_UP_AFTER)
    assert given_up(item(timedelta(hours=70)), T0 + GIVE_UP_AFTER + second)  # reminders change nothing
    assert not given_up(item(confirmed=True), T0 + 2 * GIVE_UP_AFTER)  # a confirmed task is read, not given up
