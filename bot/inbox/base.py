"""The inbox protocol: durable, idempotent by dedup key.

The edge calls :meth:`Inbox.put`; the worker claims deliveries, and for each one either acks it, asks for a
retry later, or dead-letters it. Both backends (Redis Streams, SQL table) implement this protocol and pass
the same contract tests (tests/contract/test_inbox_contract.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from scrm.errors import LianyiError


class InboxUnavailable(LianyiError):
    """The inbox could not durably take the event; the edge answers 503 so WeCom retries."""


@dataclass(frozen=True, slots=True)
class InboxItem:
    dedup_key: str
    ordering_key: str
    event_type: str
    corp_id: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed item. ``ref`` is backend-specific (stream entry id, row id)."""

    ref: str
    item: InboxItem
    attempts: int  # attempts before this one


class Inbox(Protocol):
    async def put(self, item: InboxItem) -> bool:
        """Store durably. True if new, False if this dedup key was seen before. Raises InboxUnavailable."""
        ...

    async def claim(self, consumer: str, *, max_items: int = 64, block_ms: int = 1000) -> list[Delivery]:
        """Claim deliveries for ``consumer``, preserving order per ordering key (see backend docs).

        Only the oldest unfinished item of an ordering key is ever handed out, and never while an earlier
        delivery of that key is in flight or waiting for its retry. Every call also renews the lease of the
        deliveries ``consumer`` holds (``max_items=0`` only renews), so a worker that keeps claiming keeps
        its items; items of a consumer that stopped claiming become claimable again after the lease.
        Waits up to ``block_ms`` when nothing is claimable.
        """
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The handler succeeded: the item is done for good."""
        ...

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> None:
        """The handler failed: deliver again after ``delay`` seconds, keeping per-key order."""
        ...

    async def dead(self, delivery: Delivery, *, error: str) -> None:
        """Give up on the item (the worker has written the dead letter); later items of its key proceed."""
        ...

    async def backlog(self) -> int:
        """How many items are neither acked nor dead (health checks, tests, benchmarks)."""
        ...

    async def close(self) -> None: ...


def partition_for(ordering_key: str, partitions: int) -> int:
    """The ordering lane of a key: a stable hash (CRC-32), the same in every process and backend."""
    return zlib.crc32(ordering_key.encode()) % partitions
