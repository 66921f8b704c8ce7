"""The emulator's group owners: staff members who confirm their company group-send tasks (企业群发) in the
WeCom client some time after the task appears, after a reminder, or never.

``add_msg_template`` only creates one unsent task per sender; in WeCom nothing reaches a customer or a group
until that member taps 发送. Each owner has an :class:`OwnerProfile`: ``confirm_after`` seconds after the
message was created (``GroupMsg.created_at``) they confirm on their own, and ``after_reminder`` seconds after
a ``remind_groupmsg_send`` reminder (the times in ``GroupMsg.reminders``) they confirm even if they would not
have on their own. Whichever comes first wins; None means never. Every reminder counts from its own time, so
a second reminder never delays a confirmation the first one already planned.

The caller turns off the emulator's instant confirmation first: ``state.groupmsg_auto_confirm = False``
(otherwise every task is sent inside add_msg_template and the owners find nothing to do).

Time is the emulator's clock (``state.now()``): on a :class:`~bot.emulator.clock.ManualClock` a test moves
the owners by moving the clock. :meth:`GroupSendOwners.step` confirms what is due and returns;
:meth:`GroupSendOwners.run` steps until told to stop. What they did is in :attr:`GroupSendOwners.actions`,
in order. :func:`draw_owner_profiles` gives a deterministic (seeded) mix for benchmarks.

Cost: each message is indexed once when first seen (a heap entry per task that will be confirmed on its own);
a step then pops only what is due, and looks at the last reminder of messages that still have an unsent task
of an owner who reacts to reminders. Nothing else is rescanned, so thousands of tasks stay cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from bot.emulator.groupmsg_records import TASK_UNSENT, GroupMsg
from bot.emulator.state import EmulatorState

Why = Literal["own", "reminder"]


@dataclass(frozen=True, slots=True)
class OwnerProfile:
    """How one owner treats a group-send task: ``confirm_after`` seconds after it was created they confirm it
    (None: never on their own); ``after_reminder`` seconds after a reminder they confirm it (None: reminders
    do not move them)."""

    confirm_after: float | None = 60.0
    after_reminder: float | None = None

    @property
    def confirms(self) -> bool:
        """Whether anything can make this owner confirm."""
        return self.confirm_after is not None or self.after_reminder is not None


DEFAULT_OWNER = OwnerProfile()  # confirms a minute after the task appears; reminders change nothing
NEVER_CONFIRMS = OwnerProfile(confirm_after=None, after_reminder=None)


def draw_owner_profiles(
    userids: Iterable[str],
    *,
    seed: int,
    never_share: float = 0.1,
    reminder_share: float = 0.1,
    delay_range: tuple[float, float] = (60.0, 3600.0),
) -> dict[str, OwnerProfile]:
    """A seeded mix, the same for the same userids and seed: ``never_share`` of the owners never confirm,
    ``reminder_share`` confirm only after a reminder, the rest confirm on their own and ignore reminders.
    Delays are uniform in ``delay_range`` (rounded to tenths of a second). Returned sorted by userid."""
    if never_share < 0 or reminder_share < 0 or never_share + reminder_share > 1:
        raise ValueError("never_share and reminder_share must be non-negative and add up to at most 1")
    low, high = delay_range
    if not 0 <= low <= high:
        raise ValueError(f"delay_range must be 0 <= low <= high, got {delay_range}")
    rng = random.Random(seed)
    owners = sorted(set(userids))
    rng.shuffle(owners)
    never = round(len(owners) * never_share)
    reminded = min(len(owners) - never, round(len(owners) * reminder_share))
    profiles: dict[str, OwnerProfile] = {}
    for index, userid in enumerate(owners):
        if index < never:
            profiles[userid] = NEVER_CONFIRMS
            continue
        delay = round(rng.uniform(low, high), 1)
        if index < never + reminded:
            profiles[userid] = OwnerProfile(confirm_after=None, after_reminder=delay)
        else:
            profiles[userid] = OwnerProfile(confirm_after=delay, after_reminder=None)
    return dict(sorted(profiles.items()))


class OwnerAction(NamedTuple):
    """One confirmation: when (emulator clock), which task, and why (``own`` delay or ``reminder``)."""

    at: float
    msgid: str
    userid: str
    why: Why


@dataclass(order=True, slots=True)
class _Plan:
    due: float
    order: int
    msgid: str = field(compare=False)
    userid: str = field(compare=False)
    why: Why = field(compare=False)


@dataclass(slots=True)
class _Watch:
    """A message with unsent tasks of owners who react to reminders: userid → their after_reminder."""

    msg: GroupMsg
    delays: dict[str, float]
    seen: float = float("-inf")  # the latest reminder time already planned for


class GroupSendOwners:
    """The group owners of an emulated corp (see the module docstring).

    ``profiles`` maps a userid to its behaviour; senders not in it behave like ``default``.
    """

    def __init__(
        self,
        state: EmulatorState,
        profiles: Mapping[str, OwnerProfile],
        default: OwnerProfile = DEFAULT_OWNER,
    ) -> None:
        self.state = state
        self.profiles = dict(profiles)
        self.default = default
        self.actions: list[OwnerAction] = []
        self._plans: list[_Plan] = []
        self._order = itertools.count()
        self._watch: dict[str, _Watch] = {}
        self._indexed: set[str] = set()  # msgids already looked at
        self._cursor = 0  # how many of state.group_msgs (in insertion order) were looked at

    def profile(self, userid: str) -> OwnerProfile:
        return self.profiles.get(userid, self.default)

    def did(self, why: Why) -> list[OwnerAction]:
        return [action for action in self.actions if action.why == why]

    def next_due(self) -> float | None:
        """When the earliest planned confirmation falls due, counting messages and reminders made since the last
        step (None: nothing planned). A virtual-clock benchmark can jump the clock there, then step."""
        self._index_new()
        self._see_reminders()
        while self._plans and not self._waiting(self._plans[0].msgid, self._plans[0].userid):
            heapq.heappop(self._plans)
        return self._plans[0].due if self._plans else None

    async def run(self, stop: asyncio.Event, interval: float = 0.2) -> None:
        """Step until ``stop`` is set, waiting ``interval`` seconds (or for ``stop``) between steps."""
        while not stop.is_set():
            self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def step(self) -> int:
        """Look at new messages and reminders, then confirm every task now due; returns how many confirmed."""
        self._index_new()
        self._see_reminders()
        now = self.state.now()
        confirmed = 0
        while self._plans and self._plans[0].due <= now:
            plan = heapq.heappop(self._plans)
            if not self._waiting(plan.msgid, plan.userid):
                continue  # sent by hand, by an earlier plan, or cancelled
            self.state.confirm_groupmsg(plan.msgid, plan.userid)
            self.actions.append(OwnerAction(self.state.now(), plan.msgid, plan.userid, plan.why))
            self._unwatch(plan.msgid, plan.userid)
            confirmed += 1
        return confirmed

    # ---- indexing ------------------------------------------------------------------------------------------

    def _index_new(self) -> None:
        msgs = self.state.group_msgs
        if len(msgs) == self._cursor:
            return
        if len(msgs) > self._cursor:
            fresh: Iterable[GroupMsg] = itertools.islice(msgs.values(), self._cursor, None)
        else:  # messages were removed (not something WeCom does): look at everything again
            fresh = list(msgs.values())
        for msg in fresh:
            if msg.msgid not in self._indexed:
                self._indexed.add(msg.msgid)
                self._index(msg)
        self._cursor = len(msgs)

    def _index(self, msg: GroupMsg) -> None:
        delays: dict[str, float] = {}
        for userid, task in msg.tasks.items():
            if task.status != TASK_UNSENT or task.cancelled:
                continue
            profile = self.profile(userid)
            if profile.confirm_after is not None:
                self._plan(msg.created_at + profile.confirm_after, msg.msgid, userid, "own")
            if profile.after_reminder is not None:
                delays[userid] = profile.after_reminder
        if delays:
            self._watch[msg.msgid] = _Watch(msg, delays)

    def _see_reminders(self) -> None:
        finished: list[str] = []
        for msgid, watch in self._watch.items():
            reminders = watch.msg.reminders
            if not reminders or reminders[-1] <= watch.seen:
                continue
            fresh = [at for at in reminders if at > watch.seen]
            watch.seen = reminders[-1]
            watch.delays = {u: d for u, d in watch.delays.items() if self._waiting(msgid, u)}
            for at in fresh:
                for userid, delay in watch.delays.items():
                    self._plan(at + delay, msgid, userid, "reminder")
            if not watch.delays:
                finished.append(msgid)
        for msgid in finished:
            del self._watch[msgid]

    def _plan(self, due: float, msgid: str, userid: str, why: Why) -> None:
        heapq.heappush(self._plans, _Plan(due, next(self._order), msgid, userid, why))

    def _unwatch(self, msgid: str, userid: str) -> None:
        watch = self._watch.get(msgid)
        if watch is not None:
            watch.delays.pop(userid, None)
            if not watch.delays:
                del self._watch[msgid]

    def _waiting(self, msgid: str, userid: str) -> bool:
        """Whether ``userid``'s task in ``msgid`` is still unsent and not cancelled."""
        msg = self.state.group_msgs.get(msgid)
        task = msg.tasks.get(userid) if msg is not None else None
        return task is not None and task.status == TASK_UNSENT and not task.cancelled
