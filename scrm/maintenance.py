"""Periodic reconciliation work the scheduler enqueues (idempotent by slot)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.commands import CommandKind, enqueue
from scrm.models import CustomerGroup


async def enqueue_tag_refresh(session: AsyncSession, corp_id: str, *, slot: str) -> bool:
    """Mirror corp tags again once per slot (e.g. per hour): API-made changes produce no callback."""
    return await enqueue(
        session, corp_id=corp_id, kind=CommandKind.REFRESH_CORP_TAGS, key=f"tick:refresh_corp_tags:{slot}", payload={}
    )


async def enqueue_stale_group_refetch(
    session: AsyncSession, corp_id: str, *, now: datetime, max_age: timedelta, limit: int = 200
) -> int:
    """Refetch active groups not synced for ``max_age`` (lost callbacks heal here). Returns how many."""
    cutoff = now - max_age
    rows = await session.exec(
        select(CustomerGroup.chat_id)
        .where(CustomerGroup.corp_id == corp_id, CustomerGroup.status == "active")
        .where(or_(col(CustomerGroup.synced_at).is_(None), col(CustomerGroup.synced_at) < cutoff))
        .order_by(col(CustomerGroup.synced_at))
        .limit(limit)
    )
    count = 0
    day = now.strftime("%Y%m%d")
    for chat_id in rows.all():
        if await enqueue(
            session,
            corp_id=corp_id,
            kind=CommandKind.FETCH_GROUP,
            key=f"tick:fetch_group:{chat_id}:{day}",
            payload={"chat_id": chat_id},
        ):
            count += 1
    return count
