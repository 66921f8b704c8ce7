"""The world of an SOP end-to-end run: a SOP folder, customers added through the emulator, a virtual clock moved in
ticks, and what the emulator and the database recorded, in China time.

:class:`SopWorld` drives a :class:`~bot.emulator.localstack.LocalStack` started without the scheduler role:
the test is the scheduler. Each tick moves the shared :class:`~bot.emulator.clock.VirtualClock` forward, runs
the SOP engine's tick functions at the new instant and waits (on the database) until every command it wrote
reached WeCom, so the emulator records each delivery at the virtual instant the engine ran the step.

The timing helpers below (``wall_time_on_or_after``, ``next_allowed_minute``) restate the template and policy rules
on their own, as the test's oracle: they do not call the engine's timing or policy code.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlmodel import select

from bot.emulator.clock import VirtualClock
from bot.emulator.counters import GroupSendDelivery
from bot.emulator.localstack import LocalStack
from bot.emulator.state import EmulatorState
from scrm.channel import build_state
from scrm.db import SessionFactory
from scrm.models import OutboxCommand, SopEnrolment, SopStepRun
from scrm.sop.schedules import run_schedules
from scrm.sop.ticks import run_due

CHINA = ZoneInfo("Asia/Shanghai")
QUIET_START, QUIET_END = time(21, 0), time(9, 0)  # the shipped policy.yaml
CAP_PER_DAY, CAP_PER_WEEK = 2, 5  # the shipped policy.yaml

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"
EXTRA_TEMPLATES = Path(__file__).resolve().parent / "sop_folder"
NURTURE_PARTS = ("new_customer_nurture.yaml", "welcome", "nurture", "tags.yaml", "policy.yaml")
# the channels a contact-way state can carry, weighted roughly like a dealer's real mix
CHANNEL_MIX = ("qr", "qr", "ad", "referral", "qr", "event", "ad", "live", "referral", "qr")


def sop_folder(dest: Path, *, policy: dict[str, Any] | None = None) -> Path:
    """The shipped welcome + nurture template with its messages, tags and policy, plus this folder's extra
    templates (``tests/e2e/sop_folder``); ``policy`` replaces top-level keys of the shipped policy.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in NURTURE_PARTS:
        source = SHIPPED / name
        if source.is_dir():
            shutil.copytree(source, dest / name)
        else:
            shutil.copy2(source, dest / name)
    for extra in sorted(EXTRA_TEMPLATES.glob("*.yaml")):
        shutil.copy2(extra, dest / extra.name)
    if policy:
        values = yaml.safe_load((dest / "policy.yaml").read_text("utf-8"))
        values.update(policy)
        (dest / "policy.yaml").write_text(yaml.safe_dump(values, allow_unicode=True), "utf-8")
    return dest


# ---- China time ------------------------------------------------------------------------------------------------


def china(at: float | datetime) -> datetime:
    """An epoch second or an aware datetime as China wall time."""
    if isinstance(at, datetime):
        return at.astimezone(CHINA)
    return datetime.fromtimestamp(at, CHINA)


def upcoming(after: datetime, *, weekday: int, wall: time) -> datetime:
    """The first instant after ``after`` that is ``wall`` China time on ISO ``weekday`` (Monday = 1), in UTC."""
    day = china(after).date()
    while True:
        candidate = datetime.combine(day, wall, tzinfo=CHINA)
        if candidate > after and candidate.isoweekday() == weekday:
            return candidate.astimezone(UTC)
        day += timedelta(days=1)


def in_quiet_hours(at: float | datetime) -> bool:
    wall = china(at).time()
    return wall >= QUIET_START or wall < QUIET_END


def next_allowed_minute(at: datetime) -> datetime:
    """``at`` when customers may be messaged then, else 09:00 China time ending that quiet night."""
    if not in_quiet_hours(at):
        return at
    local = china(at)
    day = local.date() + timedelta(days=1) if local.time() >= QUIET_START else local.date()
    return datetime.combine(day, QUIET_END, tzinfo=CHINA).astimezone(UTC)


def wall_time_on_or_after(base: datetime, wall: time) -> datetime:
    """The first China wall time ``wall`` not before ``base`` (a step's ``after`` + ``at``)."""
    local = china(base)
    due = datetime.combine(local.date(), wall, tzinfo=CHINA)
    if due < local:
        due = datetime.combine(local.date() + timedelta(days=1), wall, tzinfo=CHINA)
    return due.astimezone(UTC)


def china_day(at: float | datetime) -> date:
    return china(at).date()


def china_week(at: float | datetime) -> tuple[int, int]:
    year, week, _ = china(at).isocalendar()
    return year, week


def busiest(deliveries: Iterable[GroupSendDelivery]) -> tuple[int, int]:
    """The most deliveries one customer received on one China day and in one ISO week."""
    days = Counter(china_day(d.at) for d in deliveries)
    weeks = Counter(china_week(d.at) for d in deliveries)
    return max(days.values(), default=0), max(weeks.values(), default=0)


def cap_full_at(deliveries: Sequence[GroupSendDelivery], at: datetime, *, per_day: int, per_week: int) -> str:
    """Which cap a customer had already reached when a step fell due at ``at`` ("day", "week" or "")."""
    before = [d for d in deliveries if d.at <= at.timestamp()]
    if sum(1 for d in before if china_day(d.at) == china_day(at)) >= per_day:
        return "day"
    if sum(1 for d in before if china_week(d.at) == china_week(at)) >= per_week:
        return "week"
    return ""


def due(run: SopStepRun) -> datetime:
    assert run.due_at is not None, run.step_key
    return run.due_at


def overtaken(high: Iterable[SopStepRun], low: Iterable[SopStepRun]) -> list[tuple[str, str]]:
    """(low step, high step) pairs where one customer's lower-priority message went out while a message of the
    higher-priority template was due and still waiting (both lists: that customer's sent messages)."""
    waiting = [(run, next_allowed_minute(due(run))) for run in high]
    return [(lo.step_id, hi.step_id) for lo in low for hi, allowed in waiting if allowed <= lo.ran_at < hi.ran_at]


# ---- customers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    external_userid: str
    userid: str
    dealer: str
    channel: str
    name: str

    @property
    def state(self) -> str:
        return build_state(dealer=self.dealer, channel=self.channel, advisor=self.userid)


def plan_customers(state: EmulatorState, count: int, *, prefix: str = "wm_sop") -> list[Customer]:
    """``count`` customers spread over the advisors who get welcome codes, with a mix of channels."""
    advisors = sorted(
        (s for s in state.staff.values() if s.has_contact_permission and not s.admin_welcome and s.dealer_code),
        key=lambda s: s.userid,
    )
    return [
        Customer(
            external_userid=f"{prefix}_{i:04d}",
            userid=advisors[i % len(advisors)].userid,
            dealer=advisors[i % len(advisors)].dealer_code,
            channel=CHANNEL_MIX[i % len(CHANNEL_MIX)],
            name=f"客户{i:03d}" if i % 4 else "",
        )
        for i in range(count)
    ]


# ---- the driver ------------------------------------------------------------------------------------------------


@dataclass
class SopWorld:
    stack: LocalStack
    clock: VirtualClock
    tick: timedelta = timedelta(minutes=15)
    settle_within: float = 30.0  # real seconds one tick's commands may take to reach the emulator
    added_at: dict[str, datetime] = field(default_factory=dict)  # external_userid → virtual instant of the add

    @property
    def state(self) -> EmulatorState:
        return self.stack.state

    @property
    def session_factory(self) -> SessionFactory:
        return self.stack.session_factory

    def now(self) -> datetime:
        return self.clock.utcnow()

    async def settle(self) -> None:
        """Wake the dispatcher and wait until the inbox is empty and no command is open (twice in a row)."""
        self.stack.runtime.wakeup.notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_within
        quiet = 0
        while quiet < 2:
            inbox, outbox = await self.stack.counts()
            quiet = quiet + 1 if inbox == 0 and outbox == 0 else 0
            if loop.time() > deadline:
                raise TimeoutError(f"not settled at {china(self.now())}: {inbox} inbox events, {outbox} open commands")
            await asyncio.sleep(0.05)

    async def run_tick(self) -> int:
        """One scheduler tick at the clock's instant (schedules, then due steps); settles when it did anything."""
        now = self.now()
        runtime = self.stack.runtime
        started = await run_schedules(self.session_factory, runtime.services.sop, self.state.corp_id, now)
        advanced = await run_due(self.session_factory, runtime.services.sop, now)
        if started or advanced:
            await self.settle()
        return advanced

    async def advance_to(self, until: datetime) -> None:
        """Move the clock tick by tick up to ``until`` (inclusive), running the engine after every move."""
        while self.now() + self.tick <= until:
            self.clock.advance(self.tick.total_seconds())
            await self.run_tick()

    async def add(self, customers: Sequence[Customer]) -> None:
        """The customers add their advisors now: real callbacks through the edge, then wait for the welcomes."""
        driver = self.stack.driver()
        events = [
            self.state.add_contact(c.userid, c.external_userid, name=c.name or None, state=c.state) for c in customers
        ]
        results = await asyncio.gather(*(driver.send(fields) for fields in events))
        failed = [r for r in results if not r.ok]
        assert not failed, f"callbacks refused: {failed[:3]}"
        for customer in customers:
            self.added_at[customer.external_userid] = self.now()
        await self.settle()

    async def delete_staff(self, customers: Sequence[Customer]) -> None:
        """The customers delete their advisors in the WeCom client (del_follow_user callbacks)."""
        driver = self.stack.driver()
        events = [self.state.contact_deletes_staff(c.userid, c.external_userid) for c in customers]
        results = await asyncio.gather(*(driver.send(fields) for fields in events))
        assert all(r.ok for r in results)
        await self.settle()

    # ---- what happened -----------------------------------------------------------------------------------------

    async def step_runs(self) -> list[SopStepRun]:
        async with self.session_factory() as session:
            return list((await session.exec(select(SopStepRun))).all())

    async def enrolments(self) -> list[SopEnrolment]:
        async with self.session_factory() as session:
            return list((await session.exec(select(SopEnrolment))).all())

    async def commands(self, kind: str) -> list[OutboxCommand]:
        async with self.session_factory() as session:
            return list((await session.exec(select(OutboxCommand).where(OutboxCommand.kind == kind))).all())

    def deliveries(self) -> dict[str, list[GroupSendDelivery]]:
        """Every group send the emulator delivered, per external_userid, oldest first."""
        found: dict[str, list[GroupSendDelivery]] = {}
        for delivery in self.state.counters.group_sends:
            found.setdefault(delivery.recipient, []).append(delivery)
        return found

    def recipient_statuses(self) -> Counter[int]:
        """get_groupmsg_send_result statuses of every recipient of every group send (3 = quota hit)."""
        return Counter(r.status for msg in self.state.group_msgs.values() for r in msg.recipients)
