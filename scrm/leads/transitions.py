"""The lead lifecycle as data: which action moves a lead from which statuses to which, who may take it, and the
Chinese names staff see. :mod:`scrm.leads.actions` applies it to the database.

assigned → accepted → contacted → test_drive_booked → test_drive_done | test_drive_no_show (→ booked again)
→ ordered → delivered (closed) | lost. Contacting implies acceptance; ordering is possible from acceptance on.
Lost is two steps: the advisor requests it (lost_pending) and a manager of the lead's dealer approves (lost) or
rejects it (back to where it was).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scrm.models import WORKING_STATUSES, LeadStatus

STATUS_NAMES: dict[str, str] = {
    LeadStatus.POOL.value: "公海",
    LeadStatus.WAITING.value: "待营业分配",
    LeadStatus.ASSIGNED.value: "待接单",
    LeadStatus.ACCEPTED.value: "已接单",
    LeadStatus.CONTACTED.value: "已联系",
    LeadStatus.TEST_DRIVE_BOOKED.value: "已预约试驾",
    LeadStatus.TEST_DRIVE_DONE.value: "已试驾",
    LeadStatus.TEST_DRIVE_NO_SHOW.value: "试驾未到店",
    LeadStatus.ORDERED.value: "已下订",
    LeadStatus.DELIVERED.value: "已交车",
    LeadStatus.LOST_PENDING.value: "战败待审批",
    LeadStatus.LOST.value: "已战败",
}


def status_name(status: str) -> str:
    return STATUS_NAMES.get(status, status)


class Actor(StrEnum):
    """Who may take an action: the lead's advisor, a manager of its dealer, or (reassign only) an operator."""

    ADVISOR = "advisor"
    MANAGER = "manager"


class Action(StrEnum):
    ACCEPT = "accept"
    CONTACTED = "contacted"
    BOOK_TEST_DRIVE = "test_drive_book"
    TEST_DRIVE_DONE = "test_drive_done"
    TEST_DRIVE_NO_SHOW = "test_drive_no_show"
    ORDERED = "ordered"
    DELIVERED = "delivered"
    REQUEST_LOST = "lost_request"
    APPROVE_LOST = "lost_approve"
    REJECT_LOST = "lost_reject"
    REASSIGN = "reassign"


@dataclass(frozen=True)
class Transition:
    action: Action
    sources: frozenset[str]
    target: str  # "" = decided by the action (reject: back to where it was; reassign: routing decides)
    actor: Actor
    verb_zh: str  # what the action does, for "不能{verb_zh}" messages

    def allows(self, status: str) -> bool:
        return status in self.sources


_S = LeadStatus
_TEST_DRIVE_OUTCOMES = frozenset({_S.TEST_DRIVE_DONE.value, _S.TEST_DRIVE_NO_SHOW.value})
_OPEN_STATUSES = frozenset(WORKING_STATUSES | {_S.POOL.value, _S.WAITING.value})

TRANSITIONS: dict[Action, Transition] = {
    t.action: t
    for t in (
        Transition(Action.ACCEPT, frozenset({_S.ASSIGNED.value}), _S.ACCEPTED.value, Actor.ADVISOR, "接单"),
        Transition(
            Action.CONTACTED,
            frozenset({_S.ASSIGNED.value, _S.ACCEPTED.value}),
            _S.CONTACTED.value,
            Actor.ADVISOR,
            "标记为已联系",
        ),
        Transition(
            Action.BOOK_TEST_DRIVE,
            frozenset({_S.ACCEPTED.value, _S.CONTACTED.value, _S.TEST_DRIVE_NO_SHOW.value}),
            _S.TEST_DRIVE_BOOKED.value,
            Actor.ADVISOR,
            "预约试驾",
        ),
        Transition(
            Action.TEST_DRIVE_DONE,
            frozenset({_S.TEST_DRIVE_BOOKED.value}),
            _S.TEST_DRIVE_DONE.value,
            Actor.ADVISOR,
            "标记为已到店试驾",
        ),
        Transition(
            Action.TEST_DRIVE_NO_SHOW,
            frozenset({_S.TEST_DRIVE_BOOKED.value}),
            _S.TEST_DRIVE_NO_SHOW.value,
            Actor.ADVISOR,
            "标记为试驾未到店",
        ),
        Transition(
            Action.ORDERED,
            frozenset({_S.ACCEPTED.value, _S.CONTACTED.value, _S.TEST_DRIVE_BOOKED.value} | _TEST_DRIVE_OUTCOMES),
            _S.ORDERED.value,
            Actor.ADVISOR,
            "标记为已下订",
        ),
        Transition(Action.DELIVERED, frozenset({_S.ORDERED.value}), _S.DELIVERED.value, Actor.ADVISOR, "标记为已交车"),
        Transition(
            Action.REQUEST_LOST,
            frozenset(WORKING_STATUSES - {_S.LOST_PENDING.value}),
            _S.LOST_PENDING.value,
            Actor.ADVISOR,
            "申请战败",
        ),
        Transition(Action.APPROVE_LOST, frozenset({_S.LOST_PENDING.value}), _S.LOST.value, Actor.MANAGER, "批准战败"),
        Transition(Action.REJECT_LOST, frozenset({_S.LOST_PENDING.value}), "", Actor.MANAGER, "驳回战败申请"),
        Transition(Action.REASSIGN, frozenset(_OPEN_STATUSES - {_S.LOST_PENDING.value}), "", Actor.MANAGER, "重新分配"),
    )
}

# statuses after which the first contact has happened: reaching one stops the SLA
CONTACTED_OR_LATER: frozenset[str] = frozenset(
    {
        _S.CONTACTED.value,
        _S.TEST_DRIVE_BOOKED.value,
        _S.TEST_DRIVE_DONE.value,
        _S.TEST_DRIVE_NO_SHOW.value,
        _S.ORDERED.value,
        _S.DELIVERED.value,
        _S.LOST.value,
    }
)

TEST_DRIVE_ACTIONS: dict[str, Action] = {
    "book": Action.BOOK_TEST_DRIVE,
    "done": Action.TEST_DRIVE_DONE,
    "no_show": Action.TEST_DRIVE_NO_SHOW,
}


def refusal_zh(transition: Transition, status: str) -> str:
    """The 409 message, e.g. "线索当前状态为「已接单」，不能标记为已到店试驾"."""
    return f"线索当前状态为「{status_name(status)}」，不能{transition.verb_zh}"
