"""A lead's history: one :class:`~scrm.models.LeadEvent` per status change, assignment, reminder,
escalation, transfer step and decision, written in the transaction that made the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.models import Lead, LeadEvent


def record_event(
    session: AsyncSession,
    lead: Lead,
    kind: str,
    *,
    now: datetime,
    actor: str = "system",
    from_status: str = "",
    to_status: str = "",
    detail: dict[str, Any] | None = None,
) -> LeadEvent:
    """Append one history entry for ``lead`` (which must have been flushed, i.e. have an id)."""
    if lead.id is None:
        raise ValueError("record_event needs a flushed lead")
    event = LeadEvent(
        corp_id=lead.corp_id,
        lead_id=lead.id,
        kind=kind,
        from_status=from_status,
        to_status=to_status or (lead.status if from_status else ""),
        actor=actor,
        advisor_userid=lead.advisor_userid,
        detail=detail or {},
        at=now,
    )
    session.add(event)
    return event


def set_status(
    session: AsyncSession,
    lead: Lead,
    status: str,
    kind: str,
    *,
    now: datetime,
    actor: str = "system",
    detail: dict[str, Any] | None = None,
) -> LeadEvent:
    """Move ``lead`` to ``status`` and record it as ``kind``."""
    before = lead.status
    lead.status = status
    lead.updated_at = now
    return record_event(session, lead, kind, now=now, actor=actor, from_status=before, to_status=status, detail=detail)


# what each lead event is called in reports, the lead page and notifications
EVENT_NAMES: dict[str, str] = {
    "assigned": "分配给顾问",
    "accepted": "接单",
    "contacted": "标记已联系",
    "contacted_by_message": "顾问已发消息联系",
    "test_drive_booked": "预约试驾",
    "test_drive_done": "已到店试驾",
    "test_drive_no_show": "试驾未到店",
    "ordered": "已下订",
    "delivered": "已交车",
    "lost_requested": "申请战败",
    "lost_approved": "批准战败",
    "lost_rejected": "驳回战败",
    "reassigned": "重新分配",
    "pooled": "进入公海",
    "waiting": "等待门店营业",
    "sla_remind": "超时提醒顾问",
    "sla_manager": "超时通知经理",
    "sla_reassign": "超时改派",
    "sla_pool": "超时退回公海",
}
