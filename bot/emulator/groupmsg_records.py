"""Company group sends (企业群发, 92135): the task records and WeCom's per-recipient quota.

``add_msg_template`` creates a :class:`GroupMsg` with one :class:`SenderTask` per sending staff member and
one :class:`GroupMsgRecipient` per customer (``single``) or customer group (``group``), all unsent. Only
when the sender confirms in the WeCom client does each recipient get its final status:

- 1 sent, 2 not a friend (the relation is gone, or the group is dismissed / changed owner),
- 3 quota hit: the customer or group already received as many group sends as :class:`GroupSendQuota`
  allows in the current period (Asia/Shanghai calendar).
"""

from __future__ import annotations

import calendar
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

TASK_UNSENT = 0
TASK_SENT = 2

RECIPIENT_UNSENT = 0
RECIPIENT_SENT = 1
RECIPIENT_NOT_FRIEND = 2
RECIPIENT_QUOTA_HIT = 3

CREATE_TYPE_COMPANY = 0  # 企业发表 (filter_type 0); 个人发表 (1) never comes from the API


class QuotaMode(StrEnum):
    """How many group sends one customer or group may receive (shared by all senders of the corp)."""

    DAYS_IN_MONTH = "days_in_month"  # 2025-11 rule: as many per calendar month as the month has days
    FOUR_PER_MONTH = "4_per_month"  # the older rule
    SEVEN_PER_WEEK = "7_per_week"  # an admin option (Monday to Sunday)
    ONE_PER_DAY = "1_per_day"  # an admin option


def _period(mode: QuotaMode, day: date) -> tuple[tuple[int, ...], int]:
    """The calendar period ``day`` falls in under ``mode`` and how many sends that period allows."""
    if mode is QuotaMode.DAYS_IN_MONTH:
        return (day.year, day.month), calendar.monthrange(day.year, day.month)[1]
    if mode is QuotaMode.FOUR_PER_MONTH:
        return (day.year, day.month), 4
    if mode is QuotaMode.SEVEN_PER_WEEK:
        year, week, _ = day.isocalendar()
        return (year, week), 7
    return (day.year, day.month, day.day), 1


class GroupSendQuota:
    """Group sends received per recipient (external_userid or chat_id) per calendar period."""

    def __init__(self, mode: QuotaMode = QuotaMode.DAYS_IN_MONTH) -> None:
        self.mode = mode
        self._received: dict[str, Counter[tuple[str, tuple[int, ...]]]] = {}

    def admit(self, recipient: str, now: float) -> bool:
        """Count one delivery to ``recipient`` if its quota allows it; False = status 3."""
        period, allowed = _period(self.mode, datetime.fromtimestamp(now, SHANGHAI).date())
        received = self._received.setdefault(recipient, Counter())
        key = (self.mode.value, period)
        if received[key] >= allowed:
            return False
        received[key] += 1
        return True


@dataclass(slots=True)
class SenderTask:
    """One staff member's part of a group send: unsent until they confirm it in the client."""

    userid: str
    status: int = TASK_UNSENT
    send_time: int = 0
    cancelled: bool = False


@dataclass(slots=True)
class GroupMsgRecipient:
    userid: str  # the sender whose task reaches this recipient
    recipient: str  # external_userid (single) or chat_id (group)
    status: int = RECIPIENT_UNSENT
    send_time: int = 0


@dataclass(slots=True)
class GroupMsg:
    msgid: str
    chat_type: str  # single | group
    creator: str  # the ``sender`` given to add_msg_template ("" when WeCom picked the senders)
    create_time: int
    text: dict[str, Any] | None
    attachments: list[dict[str, Any]]
    tasks: dict[str, SenderTask] = field(default_factory=dict)
    recipients: list[GroupMsgRecipient] = field(default_factory=list)
    reminders: list[float] = field(default_factory=list)  # remind_groupmsg_send call times
    created_at: float = 0.0  # the emulator clock at add_msg_template (sub-second); 0 = create_time

    def __post_init__(self) -> None:
        if not self.created_at:
            self.created_at = float(self.create_time)

    def recipients_of(self, userid: str) -> list[GroupMsgRecipient]:
        return [r for r in self.recipients if r.userid == userid]
