"""The audit log: one row per notable change (a deletion, a failed transfer, a dismissed group …).

Services call :func:`record` only when the change really happened, so replaying an event adds no row.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.models import AuditLog


async def record(
    session: AsyncSession,
    corp_id: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any] | None = None,
    actor: str = "system",
) -> AuditLog:
    """Append an audit entry in the caller's transaction (``action`` like ``contact.deleted_by_staff``)."""
    entry = AuditLog(
        corp_id=corp_id,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        detail=detail or {},
    )
    session.add(entry)
    return entry


async def record_once(
    session: AsyncSession,
    corp_id: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any],
    actor: str = "system",
) -> bool:
    """Like :func:`record`, but skip it when the same subject already has this action with this detail.

    For events that change no other row (so a replay could not be told apart otherwise). True if written.
    """
    rows = await session.exec(
        select(AuditLog.detail).where(
            AuditLog.corp_id == corp_id,
            AuditLog.action == action,
            AuditLog.subject_type == subject_type,
            AuditLog.subject_id == subject_id,
        )
    )
    if any(existing == detail for existing in rows.all()):
        return False
    await record(session, corp_id, action, subject_type, subject_id, detail, actor)
    return True
