"""The audit log: one row per notable change (a deletion, a failed transfer, a dismissed group …).

Services call :func:`record` only when the change really happened, so replaying an event adds no row.
A change a person makes (a campaign saved, a roster imported, a user disabled) goes through
:func:`record_change`: the row names the acting user (``actor``, a username), the action and the time, and
its ``detail`` carries ``before_sha256`` / ``after_sha256``, digests of a canonical JSON of the changed
fields. Digests, not values: a password hash or a phone number never lands in the log, yet a later dump of
the row can be checked against the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
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


def canonical_digest(fields: Any) -> str:
    """SHA-256 (hex) of ``fields`` as canonical JSON: sorted keys, no spaces, dates and the like as strings."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def change_digests(before: Any, after: Any) -> dict[str, str | None]:
    """``{"before_sha256": …, "after_sha256": …}``; ``None`` stands for "did not exist" (a creation)."""
    return {
        "before_sha256": None if before is None else canonical_digest(before),
        "after_sha256": None if after is None else canonical_digest(after),
    }


async def record_change(
    session: AsyncSession,
    corp_id: str,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    actor: str,
    before: Mapping[str, Any] | list[Any] | None,
    after: Mapping[str, Any] | list[Any] | None,
    detail: Mapping[str, Any] | None = None,
) -> AuditLog:
    """Audit a change made by the user ``actor``: who, what, when, and digests of the fields before and after."""
    full = {**(detail or {}), **change_digests(before, after)}
    return await record(session, corp_id, action, subject_type, subject_id, full, actor=actor)


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
