"""The outbox dispatcher: claims due commands, runs them through the WeCom client, records a final state.

Life of a command::

    pending ──claim──▶ running ──▶ done      (WeCom accepted it; result stored)
       ▲                  │  ├────▶ failed    (FatalError: retrying cannot help)
       │                  │  ├────▶ expired   (its deadline passed, or less than ``deadline_margin`` is left)
       └──retry/backoff───┘  └────▶ dead      (retries exhausted; a DeadLetter row with source "outbox")

Claiming is one statement on both backends: ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP
LOCKED) RETURNING …``. On PostgreSQL the row locks let many dispatchers claim side by side without ever
taking the same row; SQLite ignores ``FOR UPDATE`` and serialises writers, so the conditional UPDATE is the
claim. A claim sets a lease (``claimed_until``); a command still ``running`` after its lease belongs to a
crashed process and is claimed again. ``attempts`` is incremented by the claim, so a command that crashes
its process also ends dead eventually, and it fences the result: a dispatcher whose lease was taken over
cannot overwrite the new owner's outcome.

Calls run under ``client.deadline(...)``: never past the command's deadline and never later than a
quarter of the lease before the lease ends, so a rate-limit wait turns into a rescheduled command instead
of a lease that silently runs out. A claimed command that waited for a free slot until too little of its
lease is left is released unharmed (its claim does not count as an attempt). An app message whose member
has no free slot in our per-member limiter (:class:`~bot.wecom.errors.MemberSlotUnavailable`, raised before
anything is sent) is *postponed* to when the slot frees up, also without spending an attempt; so is a call our
per-API limiter cannot fit before the call deadline (:class:`~bot.wecom.errors.LimiterRefused`: a full window or
a block after 45009 — a group send postponed this way is not mistaken for one whose answer was lost), so a burst of
notifications to one advisor is spread over the following minutes instead of dying. Outcomes are written through
:class:`~bot.outbox.outcomes.OutcomeWriter` (group commit).

Urgency: a command with a ``deadline`` (a welcome message: 20 s) is *urgent*. Claims take urgent commands
first (earliest deadline first) and the two classes run in separate slot pools: ``concurrency`` slots for
urgent commands, a quarter of that (at least one) for the others, which share the process's CPU with the
welcomes. When only one pool has room, only that class is claimed. So a burst of ``fetch_contact`` can
neither fill the claim window nor the slots or the CPU a welcome needs, and it still always progresses.
``run_once`` claims one batch, urgent commands first.

Welcome 41051 is decided by the SEND_WELCOME executor (see :mod:`bot.outbox.executors`): failed on the
first attempt, done ("already sent") after an uncertain earlier attempt; never retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from bot import metrics
from bot.outbox.executors import ExecutorEnv, executor_for
from bot.outbox.outcomes import OutcomeWriter
from bot.settings import Settings
from bot.wecom.client import WeComClient
from bot.wecom.errors import CredentialError, FatalError, LimiterRefused, MemberSlotUnavailable, WeComError
from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.errors import DomainError
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import CommandStatus, DeadLetter, OutboxCommand

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0  # seconds before the first retry; doubles per attempt
BACKOFF_MAX = 300.0
BACKOFF_JITTER = 0.25  # up to +25 % so retries of a burst spread out
LEASE_SAFETY_SHARE = 0.25  # calls must end this share of the lease before the lease does
MIN_CALL_WINDOW = timedelta(seconds=2)  # a claimed command with less lease left than this is released

_table: Any = OutboxCommand.__table__  # type: ignore[attr-defined]


def retry_delay(attempts: int, hint: float | None, rng: random.Random) -> float:
    """Seconds before the next attempt: exponential backoff, at least the errcode's hint, plus jitter."""
    base: float = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** max(0, attempts - 1))
    return max(base, hint or 0.0) * (1.0 + rng.uniform(0.0, BACKOFF_JITTER))


class OutboxDispatcher:
    def __init__(
        self,
        session_factory: SessionFactory,
        client: WeComClient,
        settings: Settings,
        *,
        instance_id: str,
        lease_seconds: float = 60,
        batch: int = 32,
        concurrency: int = 16,
        clock: Callable[[], datetime] = utcnow,
        poll_interval: float = 0.5,
        deadline_margin: float = 1.0,
        hooks: LifecycleHooks = NO_HOOKS,
    ) -> None:
        if lease_seconds < 10:
            raise ValueError("lease_seconds must be at least 10 (calls get three quarters of it)")
        self._sessions = session_factory
        self._env = ExecutorEnv(session_factory, hooks)
        self._client = client
        self._max_attempts = settings.outbox_max_attempts
        self._instance_id = instance_id
        self._lease = timedelta(seconds=lease_seconds)
        self._batch = batch
        self._concurrency = concurrency
        self._clock = clock
        self._poll_interval = poll_interval
        self._deadline_margin = timedelta(seconds=deadline_margin)
        self._wakeup = asyncio.Event()
        self._rng = random.Random()
        # claimed commands, running or waiting for a slot: [other, urgent]
        self._inflight: tuple[set[asyncio.Task[None]], set[asyncio.Task[None]]] = (set(), set())
        self._limits = (max(1, concurrency // 4), concurrency)  # slots: [other, urgent]
        self._slots = (asyncio.Semaphore(self._limits[0]), asyncio.Semaphore(self._limits[1]))
        self._outcomes = OutcomeWriter(session_factory)
        self._backlog = [False, False]  # per class [other, urgent]: its last claim was full, more are due

    def wake(self) -> None:
        """New commands were committed: claim now instead of at the next poll."""
        self._wakeup.set()

    # --- loop -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run commands until ``stop`` is set; then let the claimed ones finish.

        Per urgency class, up to its slot count of commands run at once and up to one more ``batch`` waits
        claimed, so claims are batched under load (one claim per command would cap throughput at one DB
        commit per command) while an idle dispatcher claims a single new command the moment it is woken.
        """
        stop_watcher = asyncio.create_task(self._wake_when(stop))
        try:
            while not stop.is_set():
                self._wakeup.clear()
                wants = {urgent: self._want(urgent) for urgent in (True, False)}
                full = False
                if wants[True] and wants[False]:  # room in both pools: one claim, urgent commands first
                    want = min(self._batch, wants[True] + wants[False])
                    claimed = await self._claim_or_log(want)
                    full = len(claimed) == want
                    self._backlog = [full, full]
                else:
                    claimed = []
                    for urgent, want in wants.items():
                        if want:  # a class with no room keeps its backlog flag: its finished tasks wake us
                            batch = await self._claim_or_log(want, urgent=urgent)
                            claimed += batch
                            self._backlog[urgent] = len(batch) == want
                            full = full or len(batch) == want
                for command in claimed:
                    self._spawn(command, command.deadline is not None)
                if full:
                    continue  # more may be due right now
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wakeup.wait()
        finally:
            stop_watcher.cancel()
            with suppress(asyncio.CancelledError):
                await stop_watcher
            running = [*self._inflight[True], *self._inflight[False]]
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _want(self, urgent: bool) -> int:
        """How many commands of one urgency class to claim now (0: none)."""
        inflight = len(self._inflight[urgent])
        limit = self._limits[urgent]
        want = min(self._batch, limit + self._batch - inflight)
        return want if want > 0 and (inflight < limit or want >= self._batch // 2) else 0

    async def run_once(self) -> int:
        """Claim one batch (urgent commands first), run it (per urgency class at most its slot count at a time)
        and return how many were claimed."""
        claimed = await self._claim(self._batch)
        await asyncio.gather(*(self._run_in_slot(command, command.deadline is not None) for command in claimed))
        return len(claimed)

    async def _wake_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    def _spawn(self, command: OutboxCommand, urgent: bool) -> None:
        task = asyncio.create_task(self._run_in_slot(command, urgent), name=f"outbox:{command.id}")
        self._inflight[urgent].add(task)
        task.add_done_callback(functools.partial(self._finished, urgent))

    def _finished(self, urgent: bool, task: asyncio.Task[None]) -> None:
        self._inflight[urgent].discard(task)
        if self._backlog[urgent]:
            self._wakeup.set()  # this class's last claim was full: more of its commands are probably due

    async def _run_in_slot(self, command: OutboxCommand, urgent: bool) -> None:
        async with self._slots[urgent]:
            await self._run_guarded(command)

    async def _claim_or_log(self, limit: int, *, urgent: bool | None = None) -> list[OutboxCommand]:
        try:
            return await self._claim(limit, urgent=urgent)
        except (SQLAlchemyError, OSError) as exc:
            log.error("outbox claim failed; retrying at the next poll", extra={"error": repr(exc)})
            return []

    # --- claiming ---------------------------------------------------------------------------------------

    async def _claim(self, limit: int, *, urgent: bool | None = None) -> list[OutboxCommand]:
        """Claim up to ``limit`` due commands: only urgent ones (a deadline), only others, or both (None),
        earliest deadline first, then by ``not_before``."""
        now = self._clock()
        due = or_(
            and_(_table.c.status == CommandStatus.PENDING.value, _table.c.not_before <= now),
            and_(_table.c.status == CommandStatus.RUNNING.value, _table.c.claimed_until < now),
        )
        deadline = _table.c.deadline
        if urgent is None:
            order: tuple[Any, ...] = (deadline.is_(None), deadline, _table.c.not_before, _table.c.id)
        elif urgent:
            due, order = and_(due, deadline.is_not(None)), (deadline, _table.c.id)
        else:
            due, order = and_(due, deadline.is_(None)), (_table.c.not_before, _table.c.id)
        ids = select(_table.c.id).where(due).order_by(*order).limit(limit).with_for_update(skip_locked=True)
        stmt = (
            update(_table)
            .where(_table.c.id.in_(ids))
            .values(
                status=CommandStatus.RUNNING.value,
                claimed_by=self._instance_id,
                claimed_until=now + self._lease,
                attempts=_table.c.attempts + 1,
                updated_at=now,
            )
            .returning(*_table.c)
        )
        async with write_transaction(self._sessions) as session:
            conn = await session.connection()
            rows = (await conn.execute(stmt)).mappings().all()
        commands = [OutboxCommand(**row) for row in rows]
        for command in commands:
            if command.attempts > 1:
                log.info(
                    "outbox command claimed again",
                    extra={"command_id": command.id, "kind": command.kind, "attempts": command.attempts},
                )
        return commands

    # --- running one command ----------------------------------------------------------------------------

    async def _run_guarded(self, command: OutboxCommand) -> None:
        try:
            await self._run(command)
        except Exception as exc:
            # The outcome could not be written; the lease will lapse and the command is claimed again.
            log.error(
                "outbox outcome not recorded; command will be reclaimed after its lease",
                extra={"command_id": command.id, "kind": command.kind, "error": repr(exc)},
            )

    async def _run(self, command: OutboxCommand) -> None:
        now = self._clock()
        if command.deadline is not None and command.deadline - now < self._deadline_margin:
            await self._finish(command, CommandStatus.EXPIRED, error="deadline passed before the call could start")
            return
        executor = executor_for(command.kind)
        if executor is None:
            await self._finish(command, CommandStatus.FAILED, error=f"unknown command kind {command.kind!r}")
            return
        assert command.claimed_until is not None
        call_deadline = command.claimed_until - self._lease * LEASE_SAFETY_SHARE
        if call_deadline - now < MIN_CALL_WINDOW:  # it waited too long for a slot: let it go, unharmed
            await self._release(command)
            return
        if command.deadline is not None:
            call_deadline = min(call_deadline, command.deadline)
        try:
            with self._client.deadline(call_deadline.timestamp()):
                result = await executor(self._client, command, self._env)
        except (MemberSlotUnavailable, LimiterRefused) as exc:  # nothing was sent: wait for the slot, attempt unspent
            await self._postpone(command, exc.retry_after or BACKOFF_BASE, str(exc))
        except CredentialError as exc:  # our configuration, not the command: keep it for a replay
            await self._retry(command, str(exc), exc.errcode, exc.retry_after)
        except FatalError as exc:
            await self._finish(command, CommandStatus.FAILED, errcode=exc.errcode, error=str(exc))
        except WeComError as exc:  # retryable, rate limited, or a token still refused after one refresh
            await self._retry(command, str(exc), exc.errcode, exc.retry_after)
        except DomainError as exc:
            await self._finish(command, CommandStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a database conflict while applying a fetch, or a bug: retry, then dead
            log.exception("outbox executor crashed", extra={"command_id": command.id, "kind": command.kind})
            await self._retry(command, f"{type(exc).__name__}: {exc}", None, None)
        else:
            await self._finish(command, CommandStatus.DONE, result=result)

    async def _retry(self, command: OutboxCommand, error: str, errcode: int | None, hint: float | None) -> None:
        if command.attempts >= self._max_attempts:
            await self._finish(command, CommandStatus.DEAD, errcode=errcode, error=error)
            return
        now = self._clock()
        not_before = now + timedelta(seconds=retry_delay(command.attempts, hint, self._rng))
        if command.deadline is not None and not_before > command.deadline - self._deadline_margin:
            await self._finish(
                command, CommandStatus.EXPIRED, errcode=errcode, error=f"retry would miss the deadline: {error}"
            )
            return
        changed = await self._update(
            command,
            status=CommandStatus.PENDING.value,
            not_before=not_before,
            claimed_by=None,
            claimed_until=None,
            last_errcode=errcode,
            last_error=error,
            updated_at=now,
        )
        if changed:
            metrics.OUTBOX_RETRIES.labels(command.kind, "none" if errcode is None else str(errcode)).inc()
            log.warning(
                "outbox command will be retried",
                extra={
                    "command_id": command.id,
                    "kind": command.kind,
                    "attempts": command.attempts,
                    "errcode": errcode,
                    "delay": round((not_before - now).total_seconds(), 3),
                    "error": error,
                },
            )

    async def _postpone(self, command: OutboxCommand, seconds: float, reason: str) -> None:
        """Put a command back until ``seconds`` from now without counting the attempt (its call never left):
        an app message whose member is at the per-minute or per-hour limit. Past its deadline it expires."""
        now = self._clock()
        not_before = now + timedelta(seconds=seconds)
        if command.deadline is not None and not_before > command.deadline - self._deadline_margin:
            await self._finish(command, CommandStatus.EXPIRED, error=f"no slot before the deadline: {reason}")
            return
        changed = await self._update(
            command,
            status=CommandStatus.PENDING.value,
            not_before=not_before,
            claimed_by=None,
            claimed_until=None,
            attempts=command.attempts - 1,
            updated_at=now,
        )
        if changed:
            log.info(
                "outbox command postponed for a free slot",
                extra={"command_id": command.id, "kind": command.kind, "delay": round(seconds, 3)},
            )

    async def _release(self, command: OutboxCommand) -> None:
        """Give an unstarted command back (its claim does not count as an attempt)."""
        now = self._clock()
        await self._update(
            command,
            status=CommandStatus.PENDING.value,
            claimed_by=None,
            claimed_until=None,
            attempts=command.attempts - 1,
            updated_at=now,
        )

    async def _finish(
        self,
        command: OutboxCommand,
        status: CommandStatus,
        *,
        result: dict[str, Any] | None = None,
        errcode: int | None = None,
        error: str | None = None,
    ) -> None:
        now = self._clock()
        values: dict[str, Any] = {
            "status": status.value,
            "claimed_until": None,
            "updated_at": now,
            "finished_at": now,
        }
        if result is not None:
            values["result"] = result
        if errcode is not None or error is not None:
            values["last_errcode"] = errcode
            values["last_error"] = error
        dead_letter = None
        if status is CommandStatus.DEAD:
            dead_letter = DeadLetter(
                corp_id=command.corp_id,
                source="outbox",
                ref=command.idempotency_key,
                event_type=command.kind,
                payload=dict(command.payload),
                error=error or "",
                attempts=command.attempts,
                created_at=now,
            )
        changed = await self._update(command, dead_letter=dead_letter, **values)
        if changed:
            metrics.OUTBOX_FINISHED.labels(command.kind, status.value).inc()
            metrics.OUTBOX_COMMAND_AGE_SECONDS.labels(command.kind).observe(
                max(0.0, (now - command.created_at).total_seconds())
            )
            level = logging.INFO if status is CommandStatus.DONE else logging.WARNING
            log.log(
                level,
                "outbox command %s %s: %s%s",
                command.kind,
                command.idempotency_key,
                status.value,
                f" (errcode {errcode}: {error})" if errcode is not None or error else "",
                extra={
                    "command_id": command.id,
                    "kind": command.kind,
                    "key": command.idempotency_key,
                    "attempts": command.attempts,
                    "errcode": errcode,
                    "error": error,
                },
            )

    async def _update(self, command: OutboxCommand, *, dead_letter: DeadLetter | None = None, **values: Any) -> bool:
        """Write the outcome if we still own the claim (same instance, same attempt). False if we lost it."""
        params = {f"set_{name}": value for name, value in values.items()}
        params.update(claim_id=command.id, claim_owner=self._instance_id, claim_attempts=command.attempts)
        changed = await self._outcomes.write(_fenced_update(tuple(sorted(values))), params, dead_letter)
        if not changed:
            log.warning(
                "outbox claim lost before the outcome was written; another dispatcher owns the command",
                extra={"command_id": command.id, "kind": command.kind, "attempts": command.attempts},
            )
        return changed


@functools.cache
def _fenced_update(columns: tuple[str, ...]) -> Any:
    """``UPDATE outbox_commands SET <columns> WHERE`` the claim is still ours; built once per column set."""
    return (
        update(_table)
        .where(
            _table.c.id == bindparam("claim_id"),
            _table.c.status == CommandStatus.RUNNING.value,
            _table.c.claimed_by == bindparam("claim_owner"),
            _table.c.attempts == bindparam("claim_attempts"),
        )
        .values({name: bindparam(f"set_{name}", type_=_table.c[name].type) for name in columns})
    )
