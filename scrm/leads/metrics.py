"""Lead metrics for leads created in ``[since, until)``, optionally of one dealer: leads by status; time to accept
(assigned → accepted) and to first contact (accepted → contacted) in minutes, as median, p90 and count;
conversion (ordered or delivered ÷ leads) and lost rate by dealer, by advisor and by channel; lost leads by
reason; SLA breaches (leads with an escalation in their history). Counts are grouped in SQL; the duration
quantiles are computed here from the timestamp pairs (portable across SQLite and PostgreSQL).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.models import Dealer, Lead, LeadEvent, LeadStatus

SLA_BREACH_KINDS: tuple[str, ...] = ("sla_remind", "sla_manager", "sla_reassign", "sla_pool")
CONVERTED = (LeadStatus.ORDERED.value, LeadStatus.DELIVERED.value)


@dataclass(frozen=True)
class DurationStats:
    """Minutes; None when there is no sample."""

    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, minutes: list[float]) -> DurationStats:
        if not minutes:
            return cls(0, None, None)
        ordered = sorted(minutes)
        p90 = ordered[0] if len(ordered) == 1 else statistics.quantiles(ordered, n=10, method="inclusive")[8]
        return cls(len(ordered), round(statistics.median(ordered), 1), round(p90, 1))


@dataclass(frozen=True)
class GroupRate:
    key: str  # dealer code, advisor userid or channel ("" = none)
    name: str
    leads: int
    converted: int
    lost: int

    @property
    def conversion(self) -> float:
        return round(self.converted / self.leads, 4) if self.leads else 0.0

    @property
    def lost_rate(self) -> float:
        return round(self.lost / self.leads, 4) if self.leads else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "conversion": self.conversion, "lost_rate": self.lost_rate}


@dataclass(frozen=True)
class LeadMetrics:
    since: datetime
    until: datetime
    dealer_id: int | None
    leads: int
    by_status: dict[str, int]
    time_to_accept: DurationStats
    time_to_contact: DurationStats
    by_dealer: list[GroupRate] = field(default_factory=list)
    by_advisor: list[GroupRate] = field(default_factory=list)
    by_channel: list[GroupRate] = field(default_factory=list)
    lost_by_reason: dict[str, int] = field(default_factory=dict)
    sla_breaches: int = 0
    sla_breaches_by_kind: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "dealer_id": self.dealer_id,
            "leads": self.leads,
            "by_status": self.by_status,
            "time_to_accept_minutes": asdict(self.time_to_accept),
            "time_to_contact_minutes": asdict(self.time_to_contact),
            "by_dealer": [g.as_json() for g in self.by_dealer],
            "by_advisor": [g.as_json() for g in self.by_advisor],
            "by_channel": [g.as_json() for g in self.by_channel],
            "lost_by_reason": self.lost_by_reason,
            "sla_breaches": self.sla_breaches,
            "sla_breaches_by_kind": self.sla_breaches_by_kind,
        }


def _window(corp_id: str, since: datetime, until: datetime, dealer_id: int | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        col(Lead.corp_id) == corp_id,
        col(Lead.created_at) >= since,
        col(Lead.created_at) < until,
    ]
    if dealer_id is not None:
        conditions.append(col(Lead.dealer_id) == dealer_id)
    return conditions


def _minutes(pairs: list[tuple[datetime | None, datetime | None]]) -> list[float]:
    return [
        max(0.0, (end - start).total_seconds() / 60) for start, end in pairs if start is not None and end is not None
    ]


async def _rates(session: AsyncSession, key: Any, where: list[ColumnElement[bool]]) -> list[tuple[str, int, int, int]]:
    converted = func.sum(case((col(Lead.status).in_(CONVERTED), 1), else_=0))
    lost = func.sum(case((col(Lead.status) == LeadStatus.LOST.value, 1), else_=0))
    statement = select(key, func.count(), converted, lost).where(*where).group_by(key).order_by(key)
    rows = (await session.exec(statement)).all()
    return [(str(k if k is not None else ""), int(n), int(c or 0), int(x or 0)) for k, n, c, x in rows]


async def _dealer_rates(session: AsyncSession, where: list[ColumnElement[bool]]) -> list[GroupRate]:
    rows = await _rates(session, col(Lead.dealer_id), where)
    ids = [int(k) for k, *_ in rows if k]
    dealers = (
        {d.id: d for d in (await session.exec(select(Dealer).where(col(Dealer.id).in_(ids)))).all()} if ids else {}
    )
    rates: list[GroupRate] = []
    for key, leads, converted, lost in rows:
        dealer = dealers.get(int(key)) if key else None
        code = dealer.code if dealer is not None else ""
        name = (dealer.name or dealer.code) if dealer is not None else "公海（无门店）"
        rates.append(GroupRate(code, name, leads, converted, lost))
    return sorted(rates, key=lambda r: r.key)


async def lead_metrics(
    session: AsyncSession, corp_id: str, *, since: datetime, until: datetime, dealer_id: int | None = None
) -> LeadMetrics:
    """Metrics of the corp's leads created in ``[since, until)`` (see the module docstring)."""
    where = _window(corp_id, since, until, dealer_id)
    status_rows = (await session.exec(select(Lead.status, func.count()).where(*where).group_by(Lead.status))).all()
    by_status = {str(status): int(n) for status, n in status_rows}
    accept_pairs = (
        await session.exec(select(Lead.assigned_at, Lead.accepted_at).where(*where, col(Lead.accepted_at).is_not(None)))
    ).all()
    contact_pairs = (
        await session.exec(
            select(Lead.accepted_at, Lead.contacted_at).where(*where, col(Lead.contacted_at).is_not(None))
        )
    ).all()
    by_advisor = [
        GroupRate(k, k or "（无顾问）", n, c, x)
        for k, n, c, x in await _rates(session, col(Lead.advisor_userid), where)
    ]
    by_channel = [
        GroupRate(k, k or "（未知渠道）", n, c, x) for k, n, c, x in await _rates(session, col(Lead.channel), where)
    ]
    lost_rows = (
        await session.exec(
            select(Lead.lost_reason, func.count())
            .where(*where, col(Lead.status) == LeadStatus.LOST.value)
            .group_by(Lead.lost_reason)
        )
    ).all()
    breach_join = and_(col(LeadEvent.lead_id) == col(Lead.id), col(LeadEvent.kind).in_(SLA_BREACH_KINDS))
    breaches = (
        await session.exec(
            select(func.count(func.distinct(Lead.id))).select_from(Lead).join(LeadEvent, breach_join).where(*where)
        )
    ).one()
    breach_kinds = (
        await session.exec(
            select(LeadEvent.kind, func.count(func.distinct(Lead.id)))
            .select_from(Lead)
            .join(LeadEvent, breach_join)
            .where(*where)
            .group_by(LeadEvent.kind)
        )
    ).all()
    return LeadMetrics(
        since=since,
        until=until,
        dealer_id=dealer_id,
        leads=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        time_to_accept=DurationStats.of(_minutes(list(accept_pairs))),
        time_to_contact=DurationStats.of(_minutes(list(contact_pairs))),
        by_dealer=await _dealer_rates(session, where),
        by_advisor=by_advisor,
        by_channel=by_channel,
        lost_by_reason={str(reason): int(n) for reason, n in sorted(lost_rows)},
        sla_breaches=int(breaches),
        sla_breaches_by_kind={str(kind): int(n) for kind, n in sorted(breach_kinds)},
    )
