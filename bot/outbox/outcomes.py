"""Group commit for command outcomes: many finished commands, one transaction.

Each finished command needs one conditional UPDATE (and maybe a dead letter). Committing each on its own
costs one disk flush per command and, on SQLite, a fight for the single write lock between the
dispatcher's own tasks. :class:`OutcomeWriter` queues the writes; one flusher at a time commits everything
queued so far in a single transaction, and every caller learns whether its UPDATE matched (the claim was
still ours). If a batch fails, its writes are retried one by one so that one bad row cannot sink others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from scrm.db import SessionFactory, write_transaction
from scrm.models import DeadLetter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Write:
    statement: Any  # a Core UPDATE
    params: dict[str, Any]
    dead_letter: DeadLetter | None
    done: asyncio.Future[bool]


class OutcomeWriter:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions
        self._queue: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, statement: Any, params: dict[str, Any], dead_letter: DeadLetter | None = None) -> bool:
        """Run ``statement`` with ``params`` (plus the dead letter if it matched a row); True if one row matched."""
        write = _Write(statement, params, dead_letter, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="outbox:outcomes")
        return await asyncio.shield(write.done)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._commit(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0], exc)
                    continue
                log.warning("outcome batch failed; writing one by one", extra={"size": len(batch), "error": repr(exc)})
                for write in batch:
                    try:
                        (changed,) = await self._commit([write])
                    except Exception as single_exc:
                        _settle(write, single_exc)
                    else:
                        _settle(write, changed)
                continue
            for write, changed in zip(batch, results, strict=True):
                _settle(write, changed)

    async def _commit(self, batch: list[_Write]) -> list[bool]:
        results: list[bool] = []
        async with write_transaction(self._sessions) as session:
            conn = await session.connection()
            for write in batch:
                changed = (await conn.execute(write.statement, write.params)).rowcount == 1
                if changed and write.dead_letter is not None:
                    session.add(write.dead_letter)
                results.append(changed)
        return results


def _settle(write: _Write, outcome: bool | BaseException) -> None:
    if write.done.done():
        return
    if isinstance(outcome, BaseException):
        write.done.set_exception(outcome)
    else:
        write.done.set_result(outcome)
