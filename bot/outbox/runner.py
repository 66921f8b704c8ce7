"""Running one claimed outbox command and recording its outcome (the life of a command is in
:mod:`bot.outbox.dispatcher`).

:class:`CommandRunner` claims due commands (all due ones up to a limit, or the one with a given idempotency key),
runs a claimed command through its executor under the call deadline, and writes the outcome fenced by the claim:
done, failed, expired, dead (with a dead letter), or back to pending for a retry (backoff by attempt and the
errcode's hint), a postponement or a release (neither spends an attempt). The dispatcher's loop and a tick that
runs the command it has just written (:meth:`CommandRunner.run_key`) share it, so both treat a command alike.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update

from bot import metrics
from bot.outbox.executors import ExecutorEnv, executor_for
from bot.outbox.outcomes import OutcomeWriter
from bot.wecom.client import WeComClient
from bot.wecom.errors import CredentialError, FatalError, LimiterRefused, MemberSlotUnavailable, WeComError
from scrm.commands import CommandKind
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

UNANSWERED = "an earlier call may have reached WeCom (crash or lost answer) and nothing can tell whether it did"

_table: Any = OutboxCommand.__table__  # type: ignore[attr-defined]


def tracks_calls(command: OutboxCommand) -> bool:
    """Whether a command's calls are marked in ``call_started_at``: commands with a deadline and welcomes, whose
    final state must tell a call that may have reached WeCom (``unknown``) from one never made (``expired``)."""
    return command.deadline is not None or command.kind == CommandKind.SEND_WELCOME.value


def retry_delay(attempts: int, hint: float | None, rng: random.Random) -> float:
    """Seconds before the next attempt: exponential backoff, at least the errcode's hint, plus jitter."""
    base: float = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** max(0, attempts - 1))
    return max(base, hint or 0.0) * (1.0 + rng.uniform(0.0, BACKOFF_JITTER))


class CommandRunner:
    def __init__(
        self,
        session_factory: SessionFactory,
        client: WeComClient,
        *,
        instance_id: str,
        max_attempts: int,
        lease: timedelta,
        clock: Callable[[], datetime] = utcnow,
        deadline_margin: timedelta = timedelta(seconds=1),
        hooks: LifecycleHooks = NO_HOOKS,
    ) -> None:
        """``hooks``: where what a fetch brings back (a contact's tags…) reaches the features that care."""
        self._sessions = session_factory
        self._env = ExecutorEnv(session_factory, hooks)
        self._client = client
        self._instance_id = instance_id
        self._max_attempts = max_attempts
        self._lease = lease
        self._clock = clock
        self._deadline_margin = deadline_margin
        self._rng = random.Random()
        self._outcomes = OutcomeWriter(session_factory)

    async def run_key(self, key: str) -> bool:
        """Claim the command with idempotency key ``key`` if it is due and run it now; False when it is not due,
        already final, or claimed by someone else (who then runs it)."""
        claimed = await self.claim(1, key=key)
        for command in claimed:
            await self.run(command)
        return bool(claimed)

    # --- claiming ---------------------------------------------------------------------------------------

    async def claim(self, limit: int, *, urgent: bool | None = None, key: str | None = None) -> list[OutboxCommand]:
        """Claim up to ``limit`` due commands: only urgent ones (a deadline), only others, or both (None),
        earliest deadline first, then by ``not_before``; with ``key`` only the command of that idempotency key."""
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
        if key is not None:
            due = and_(due, _table.c.idempotency_key == key)
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

    async def run(self, command: OutboxCommand) -> None:
        """Run a claimed command and record its outcome; never raises."""
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
            if command.call_started_at is not None:
                await self._finish(command, CommandStatus.UNKNOWN, error=UNANSWERED)
            else:
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
        if tracks_calls(command) and not await self._update(command, call_started_at=now):
            return  # the mark is committed before anything can be sent; without it the claim was lost
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
            await self._retry(command, str(exc), exc.errcode, exc.retry_after, sent_at=now)
        except DomainError as exc:
            await self._finish(command, CommandStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a database conflict while applying a fetch, or a bug: retry, then dead
            log.exception("outbox executor crashed", extra={"command_id": command.id, "kind": command.kind})
            await self._retry(command, f"{type(exc).__name__}: {exc}", None, None, sent_at=now)
        else:
            await self._finish(command, CommandStatus.DONE, result=result)

    async def _retry(
        self,
        command: OutboxCommand,
        error: str,
        errcode: int | None,
        hint: float | None,
        *,
        sent_at: datetime | None = None,
    ) -> None:
        """Back to pending, or a final state when no retry is left. ``sent_at``: this attempt's call started then and
        may have reached WeCom (no errcode came back); a WeCom error answer means that call did nothing."""
        in_doubt = command.call_started_at
        if errcode is None and tracks_calls(command):
            in_doubt = sent_at or in_doubt
        if command.attempts >= self._max_attempts:
            final = CommandStatus.UNKNOWN if in_doubt and command.deadline is not None else CommandStatus.DEAD
            await self._finish(command, final, errcode=errcode, error=error)
            return
        now = self._clock()
        not_before = now + timedelta(seconds=retry_delay(command.attempts, hint, self._rng))
        if command.deadline is not None and not_before > command.deadline - self._deadline_margin:
            final = CommandStatus.UNKNOWN if in_doubt else CommandStatus.EXPIRED
            await self._finish(command, final, errcode=errcode, error=f"retry would miss the deadline: {error}")
            return
        values: dict[str, Any] = {"call_started_at": in_doubt} if tracks_calls(command) else {}
        changed = await self._update(
            command,
            status=CommandStatus.PENDING.value,
            not_before=not_before,
            claimed_by=None,
            claimed_until=None,
            last_errcode=errcode,
            last_error=error,
            updated_at=now,
            **values,
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
            final = CommandStatus.UNKNOWN if command.call_started_at is not None else CommandStatus.EXPIRED
            await self._finish(command, final, error=f"no slot before the deadline: {reason}")
            return
        values: dict[str, Any] = {"call_started_at": command.call_started_at} if tracks_calls(command) else {}
        changed = await self._update(
            command,
            status=CommandStatus.PENDING.value,
            not_before=not_before,
            claimed_by=None,
            claimed_until=None,
            attempts=command.attempts - 1,
            updated_at=now,
            **values,
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
