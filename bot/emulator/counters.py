"""What the emulator counts, so tests can assert on how Lianyi used "WeCom"."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class WelcomeSent:
    code: str
    userid: str
    external_userid: str
    body: dict[str, Any]
    at: float


@dataclass(slots=True)
class AppMessageDelivered:
    msgid: str
    touser: str
    msgtype: str
    body: dict[str, Any]
    at: float


@dataclass(slots=True)
class GroupSendDelivery:
    """One customer or customer group receiving one company group send (add_msg_template, confirmed)."""

    msgid: str
    sender: str
    recipient: str  # external_userid (single) or chat_id (group)
    chat_type: str
    text: str
    attachments: list[dict[str, Any]]
    at: float


@dataclass(slots=True)
class Counters:
    api_calls: Counter[str] = field(default_factory=Counter)  # every request per API path
    api_errors: Counter[tuple[str, int]] = field(default_factory=Counter)  # (path, errcode) answered
    faults_injected: Counter[tuple[str, int]] = field(default_factory=Counter)  # (path, errcode) by FaultPlan
    welcome_sends: Counter[str] = field(default_factory=Counter)  # successful sends per welcome code
    welcome_rejections: dict[str, list[int]] = field(default_factory=dict)  # code → errcodes answered
    messages_delivered: Counter[str] = field(default_factory=Counter)  # app messages per member
    messages_dropped: Counter[str] = field(default_factory=Counter)  # silently dropped over 30/min, 1000/h
    messages_duplicate: Counter[str] = field(default_factory=Counter)  # suppressed by enable_duplicate_check
    mark_tag_calls: int = 0
    transfers: Counter[str] = field(default_factory=Counter)  # accepted transfer_customer per external_userid
    welcomes: list[WelcomeSent] = field(default_factory=list)
    app_messages: list[AppMessageDelivered] = field(default_factory=list)
    group_sends: list[GroupSendDelivery] = field(default_factory=list)

    def received_by(self, recipient: str) -> list[GroupSendDelivery]:
        """The group sends one external_userid or chat_id received, oldest first."""
        return [delivery for delivery in self.group_sends if delivery.recipient == recipient]

    def reject_welcome(self, code: str, errcode: int) -> None:
        self.welcome_rejections.setdefault(code, []).append(errcode)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (the CLI prints it; benchmarks store it)."""
        return {
            "api_calls": dict(sorted(self.api_calls.items())),
            "api_errors": {f"{path}:{code}": n for (path, code), n in sorted(self.api_errors.items())},
            "faults_injected": {f"{path}:{code}": n for (path, code), n in sorted(self.faults_injected.items())},
            "welcome_sends": sum(self.welcome_sends.values()),
            "welcome_rejections": sum(len(v) for v in self.welcome_rejections.values()),
            "messages_delivered": sum(self.messages_delivered.values()),
            "messages_dropped": sum(self.messages_dropped.values()),
            "messages_duplicate": sum(self.messages_duplicate.values()),
            "mark_tag_calls": self.mark_tag_calls,
            "group_sends": len(self.group_sends),
            "transfers": sum(self.transfers.values()),
        }
