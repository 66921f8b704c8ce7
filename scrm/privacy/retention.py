"""Retention: message text is kept only as long as the settings allow, in bounded batches.

Two purges, both idempotent (they only touch rows that still hold text) and both keeping the rows, so counts
per day, per source and per customer still add up:

- :func:`purge_old_messages` — messages sent before the cutoff (``LIANYI_MESSAGE_RETENTION_DAYS``) lose their
  text and payload.
- :func:`purge_lost_customers` — every message of a customer with no live follow relation left (they deleted
  every staff member, or were deleted), the latest deletion before the cutoff
  (``LIANYI_LOST_CUSTOMER_RETENTION_DAYS``), loses its text and payload, whatever its age.

Each batch is its own short transaction of at most ``batch_size`` rows (a background writer on SQLite: every
waiting callback goes first), and one call stops after ``max_batches``; the next tick continues.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.models import FollowRelation, Message

BATCH_SIZE = 500
MAX_BATCHES = 200


async def _purge(factory: SessionFactory, where: list[Any], batch_size: int, max_batches: int) -> int:
    purged = 0
    for _ in range(max_batches):
        async with write_transaction(factory, urgent=False) as session:
            stmt = select(Message.id).where(*where, Message.text != "").order_by(col(Message.id)).limit(batch_size)
            ids = list((await session.exec(stmt)).all())
            if ids:
                clear = update(Message).where(col(Message.id).in_(ids)).values(text="", payload=None)
                await session.exec(clear)
        purged += len(ids)
        if len(ids) < batch_size:
            break
    return purged


async def purge_old_messages(
    factory: SessionFactory,
    corp_id: str,
    *,
    sent_before: datetime,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Blank the text of messages sent before ``sent_before``; the number of messages purged."""
    where = [Message.corp_id == corp_id, col(Message.sent_at) < sent_before]
    return await _purge(factory, where, batch_size, max_batches)


def lost_customers(corp_id: str, deleted_before: datetime) -> Any:
    """The external_userids whose every follow relation is deleted, the latest deletion before the cutoff."""
    return (
        select(FollowRelation.external_userid)
        .where(FollowRelation.corp_id == corp_id)
        .group_by(col(FollowRelation.external_userid))
        .having(func.count() == func.count(col(FollowRelation.deleted_at)))
        .having(func.max(col(FollowRelation.deleted_at)) < deleted_before)
    )


async def purge_lost_customers(
    factory: SessionFactory,
    corp_id: str,
    *,
    deleted_before: datetime,
    batch_size: int = BATCH_SIZE,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Blank the text of every message of the customers :func:`lost_customers` names."""
    lost = lost_customers(corp_id, deleted_before)
    where = [Message.corp_id == corp_id, col(Message.external_userid).in_(lost)]
    return await _purge(factory, where, batch_size, max_batches)
