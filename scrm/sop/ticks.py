"""The leader's SOP tick: advance every due enrolment in batches, and end the enrolments of retired templates."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import literal_column, update
from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.models import EnrolmentStatus, SopEnrolment
from scrm.sop.engine import RETRY_AFTER, advance
from scrm.sop.services import SopServices

log = logging.getLogger(__name__)


async def run_due(
    session_factory: SessionFactory, services: SopServices, now: datetime, *, batch: int = 200, max_batches: int = 50
) -> int:
    """One tick: advance every enrolment due at ``now`` (in batches, each its own transaction)."""
    total = 0
    for _ in range(max_batches):
        async with write_transaction(session_factory, urgent=False) as session:
            rows = list(
                (
                    await session.exec(
                        select(SopEnrolment)
                        .where(
                            # a literal, not a parameter: PostgreSQL then always matches the partial index
                            col(SopEnrolment.status) == literal_column("'active'"),
                            col(SopEnrolment.next_due_at) <= now,
                        )
                        # ties (e.g. every deferral ending at 09:00) go to the higher priority first
                        .order_by(col(SopEnrolment.next_due_at), col(SopEnrolment.priority).desc())
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            # higher-priority templates first: when caps collide inside a tick, they win
            for enrolment in sorted(rows, key=lambda e: -e.priority):
                try:
                    async with session.begin_nested():
                        await advance(session, services, enrolment, now)
                except Exception:
                    log.exception("SOP step failed; retrying in 5 minutes", extra={"enrolment": enrolment.id})
                    await session.refresh(enrolment)
                    enrolment.next_due_at = now + RETRY_AFTER
        total += len(rows)
        if len(rows) < batch:
            break
    return total


async def sweep_retired(session_factory: SessionFactory, services: SopServices, now: datetime) -> int:
    """After a (re)load, end every enrolment of a template the good catalog no longer runs."""
    catalog = services.catalog()
    if not catalog.ok or services.swept_generation == catalog.generation:
        return 0
    ended = 0
    async with write_transaction(session_factory, urgent=False) as session:
        ids = (
            await session.exec(
                select(SopEnrolment.template_id).where(SopEnrolment.status == EnrolmentStatus.ACTIVE.value).distinct()
            )
        ).all()
        for template_id in ids:
            reason = catalog.end_reason(template_id)
            if reason is None:
                continue
            result = await (await session.connection()).execute(
                update(SopEnrolment)
                .where(col(SopEnrolment.template_id) == template_id, col(SopEnrolment.status) == "active")
                .values(status=EnrolmentStatus.CANCELLED.value, end_reason=reason, ended_at=now, next_due_at=None)
            )
            count = int(getattr(result, "rowcount", 0) or 0)
            ended += count
            log.info("SOP enrolments ended", extra={"template": template_id, "reason": reason, "count": count})
    services.swept_generation = catalog.generation
    return ended
