"""SLA phases of a lead: accept within N minutes of assignment, first contact within M minutes of acceptance,
counted in the dealer's opening minutes when ``sla.business_hours`` (a lead assigned at 17:58 with a 5-minute
SLA is due at 09:03 the next opening day). Each phase has a ladder of rungs at ``after`` minutes past its
deadline; ``next_check_at`` is when the next rung fires, and the SLA tick (:mod:`scrm.leads.escalation`)
claims leads by it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scrm.leads.calendar import OpeningHours
from scrm.leads.rules import LadderRung, SlaRules
from scrm.models import Lead, SlaPhase


def _add(start: datetime, minutes: int, sla: SlaRules, hours: OpeningHours | None) -> datetime:
    if sla.business_hours and hours is not None and not hours.always_open:
        return hours.add_open_minutes(start, minutes)
    return start + timedelta(minutes=minutes)


def phase_minutes(phase: SlaPhase, sla: SlaRules) -> int:
    return sla.accept_minutes if phase == SlaPhase.ACCEPT else sla.contact_minutes


def rung_at(lead: Lead, rung: LadderRung, sla: SlaRules, hours: OpeningHours | None) -> datetime:
    """When ``rung`` of the lead's running phase fires."""
    if lead.sla_deadline_at is None:
        raise ValueError("the lead has no running SLA phase")
    return _add(lead.sla_deadline_at, rung.after, sla, hours)


def schedule_next_rung(lead: Lead, sla: SlaRules, hours: OpeningHours | None) -> None:
    """Point ``next_check_at`` at the next rung of the running phase (None when the ladder is done)."""
    ladder = sla.ladder(lead.sla_phase)
    if not lead.sla_phase or lead.sla_step >= len(ladder):
        lead.next_check_at = None
        return
    lead.next_check_at = rung_at(lead, ladder[lead.sla_step], sla, hours)


def start_phase(lead: Lead, phase: SlaPhase, *, now: datetime, sla: SlaRules, hours: OpeningHours | None) -> None:
    """Start ``phase`` at ``now``: its deadline, rung 0, and the first check."""
    lead.sla_phase = phase.value
    lead.sla_started_at = now
    lead.sla_deadline_at = _add(now, phase_minutes(phase, sla), sla, hours)
    lead.sla_step = 0
    schedule_next_rung(lead, sla, hours)


def clear_phase(lead: Lead) -> None:
    """No SLA runs any more (contacted, closed, pooled, waiting)."""
    lead.sla_phase = SlaPhase.NONE.value
    lead.sla_started_at = None
    lead.sla_deadline_at = None
    lead.sla_step = 0
    lead.next_check_at = None
