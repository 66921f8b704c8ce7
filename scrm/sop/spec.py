"""The SOP template format: what an operator's YAML file means, validated by pydantic.

One YAML file = one template. The models here are the single source of truth for the format; the checker
(:mod:`scrm.sop.check`) turns their validation errors into ``file:line:col code message`` lines, and the
engine runs the validated objects. Every operator-facing error message is Chinese; the error *type* (the
first argument of :class:`~pydantic_core.PydanticCustomError`) is the stable code the checker maps.

A template is frozen together with every Jinja2 file it may render into a :class:`TemplateBundle` whose
``version`` is a hash of both: an edit to the YAML or to one of its ``.j2`` files is a new version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scrm.audience import CONTACT_ONLY_AUDIENCE, GROUP_ONLY_AUDIENCE, Audience
from scrm.spec_fields import (
    ATTACHMENTS_MAX,
    AdvisorTask,
    Attachment,
    ClockTime,
    Cron,
    Dates,
    Duration,
    Level,
    Levels,
    Message,
    Names,
    NotifyStaff,
    Regex,
    Stages,
    StrictModel,
    Weekdays,
    spec_error,
)

TEMPLATE_ID = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")

Kind = Literal["contact", "group"]

# trigger event → the template kinds it may start
EVENTS: Mapping[str, frozenset[str]] = {
    "contact.added": frozenset({"contact"}),
    "contact.tagged": frozenset({"contact"}),
    "contact.stage_changed": frozenset({"contact"}),
    "contact.intent_level": frozenset({"contact"}),
    "lead.lost": frozenset({"contact"}),
    "contact.silent": frozenset({"contact"}),
    "group.member_joined": frozenset({"group"}),
    "message.keyword": frozenset({"contact", "group"}),
}
# trigger filter → the events that accept it (the schedule keys cron/dates/at are checked separately)
TRIGGER_FILTERS: Mapping[str, frozenset[str]] = {
    "channel": frozenset({"contact.added"}),
    "dealer": frozenset({"contact.added"}),
    "staff": frozenset({"contact.added"}),
    "state": frozenset({"contact.added"}),
    "tags": frozenset({"contact.tagged"}),
    "to": frozenset({"contact.stage_changed"}),
    "level": frozenset({"contact.intent_level"}),
    "days": frozenset({"contact.silent"}),
    "keywords": frozenset({"message.keyword"}),
    "regex": frozenset({"message.keyword"}),
    "scope": frozenset({"message.keyword"}),
}
ACTIONS = (
    "welcome",
    "private_message",
    "advisor_task",
    "group_message",
    "add_tags",
    "remove_tags",
    "notify_staff",
    "start_sop",
    "end",
)
# action key → policy kind (add_tags/remove_tags are one "tags" action and may appear together)
ACTION_KIND: Mapping[str, str] = {**{a: a for a in ACTIONS}, "add_tags": "tags", "remove_tags": "tags"}
GROUP_ACTIONS = frozenset({"group_message", "notify_staff", "start_sop", "end"})
CONTACT_ACTIONS = frozenset(ACTIONS) - {"group_message"}


# ---- trigger, audience, exit -------------------------------------------------------------------------


class Trigger(StrictModel):
    """An event (with filters) or a schedule (``cron``, or ``dates`` with ``at``)."""

    event: str | None = None
    cron: Cron = None
    dates: Dates = Field(default_factory=list)
    at: ClockTime | None = None
    # filters
    channel: Names = Field(default_factory=list)
    dealer: Names = Field(default_factory=list)
    staff: Names = Field(default_factory=list)
    state: str | None = None  # glob over the raw contact-way state, e.g. "L1~a~*"
    tags: Names = Field(default_factory=list)  # contact.tagged: any of these was added
    to: Stages = Field(default_factory=list)  # contact.stage_changed: the new stage
    level: Level | None = None  # contact.intent_level: reached this level or a hotter one
    days: int | None = Field(default=None, ge=1, le=365)  # contact.silent
    keywords: Names = Field(default_factory=list)  # message.keyword
    regex: Regex = None
    scope: Literal["group", "single", "any"] = "any"

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str | None) -> str | None:
        if value is not None and value not in EVENTS:
            raise spec_error("unknown_event", f"未知的触发事件 {value}", choices=sorted(EVENTS))
        return value

    @model_validator(mode="after")
    def _shape(self) -> Trigger:
        schedules = sum([self.cron is not None, bool(self.dates)])
        if (self.event is None) == (schedules == 0):
            raise spec_error("trigger_shape", "trigger 需要且只能有一种：event，或 cron，或 dates")
        if schedules > 1:
            raise spec_error("trigger_shape", "cron 与 dates 只能选一个")
        if self.dates and self.at is None:
            raise spec_error("trigger_shape", 'dates 需要同时写 at（发送时刻，如 "10:00"）')
        for name, events in TRIGGER_FILTERS.items():
            value = getattr(self, name)
            if value not in (None, [], "any") and self.event not in events:
                raise spec_error("filter_not_allowed", f"{name} 只能用于 {'、'.join(sorted(events))} 触发", key=name)
        if self.event == "contact.silent" and self.days is None:
            raise spec_error("missing_filter", "contact.silent 需要 days（多少天没有消息或点击）", key="days")
        if self.event == "contact.intent_level" and self.level is None:
            raise spec_error("missing_filter", "contact.intent_level 需要 level（H/A/B/C）", key="level")
        if self.event == "message.keyword" and not (self.keywords or self.regex):
            raise spec_error("missing_filter", "message.keyword 需要 keywords 或 regex", key="keywords")
        return self

    @property
    def name(self) -> str:
        """The event name, or ``schedule`` for cron/dates triggers."""
        return self.event or "schedule"


class Exit(StrictModel):
    """Any condition that holds ends the enrolment and cancels its pending steps."""

    stage: Stages = Field(default_factory=list)
    intent_level: Levels = Field(default_factory=list)
    tags_added: Names = Field(default_factory=list)
    contact_deleted: bool = False  # either side deleted the relation
    group_dismissed: bool = True


# ---- steps ------------------------------------------------------------------------------------------------


class Step(StrictModel):
    id: str | None = Field(default=None, pattern=STEP_ID.pattern)
    immediately: bool = False
    after: Duration | None = None
    at: ClockTime | None = None
    weekday: Weekdays | None = None
    when: str | None = None  # a Jinja2 expression over the template variables
    # exactly one action (add_tags and remove_tags may go together)
    welcome: Message | None = None
    private_message: Message | None = None
    advisor_task: AdvisorTask | None = None
    group_message: Message | None = None
    add_tags: Names | None = None
    remove_tags: Names | None = None
    notify_staff: NotifyStaff | None = None
    start_sop: str | None = None
    end: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_action_and_timing(self) -> Step:
        kinds = {ACTION_KIND[a] for a in ACTIONS if getattr(self, a) is not None}
        if len(kinds) != 1:
            found = "、".join(a for a in ACTIONS if getattr(self, a) is not None) or "无"
            raise spec_error("step_action", f"每个步骤只能有一个动作（{'、'.join(ACTIONS)}），这里是：{found}")
        if self.immediately and (self.after or self.at or self.weekday):
            raise spec_error("step_timing", "immediately 不能与 after / at / weekday 同时使用")
        return self

    @property
    def action(self) -> str:
        """The action key (``add_tags`` for a step that adds and removes)."""
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    @property
    def kind(self) -> str:
        """The policy kind of the action (see :mod:`scrm.contact_policy`)."""
        return ACTION_KIND[self.action]

    @property
    def message(self) -> Message | None:
        for name in ("welcome", "private_message", "advisor_task", "group_message"):
            value = getattr(self, name)
            if value is not None:
                return value  # type: ignore[no-any-return]
        return None


class SopTemplate(StrictModel):
    id: str = Field(pattern=TEMPLATE_ID.pattern)
    name: str = Field(min_length=1, max_length=64)
    kind: Kind
    enabled: bool = True
    description: str = ""
    priority: int = Field(default=50, ge=0, le=100)  # among SOPs: higher goes first when caps collide
    trigger: Trigger
    audience: Audience = Field(default_factory=Audience)
    steps: list[Step] = Field(min_length=1, max_length=50)
    exit: Exit = Field(default_factory=Exit)

    @model_validator(mode="after")
    def _consistent(self) -> SopTemplate:
        if self.trigger.event and self.kind not in EVENTS[self.trigger.event]:
            raise spec_error("kind_mismatch", f"{self.trigger.event} 不能触发 {self.kind} 类型的 SOP")
        wrong_audience = CONTACT_ONLY_AUDIENCE if self.kind == "group" else GROUP_ONLY_AUDIENCE
        for name in wrong_audience:
            if getattr(self.audience, name) not in (None, []):
                raise spec_error("kind_mismatch", f"audience.{name} 不能用于 {self.kind} 类型的 SOP", key=name)
        allowed = GROUP_ACTIONS if self.kind == "group" else CONTACT_ACTIONS
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.action not in allowed:
                raise spec_error("kind_mismatch", f"第 {index + 1} 步的 {step.action} 不能用于 {self.kind} 类型的 SOP")
            if step.welcome is not None and self.trigger.event != "contact.added":
                raise spec_error(
                    "kind_mismatch", "welcome 只能用于 contact.added 触发的 SOP（欢迎语码只在加好友时有效）"
                )
            step_id = self.step_id(index)
            if step_id in seen:
                raise spec_error("duplicate_step", f"步骤 id 重复：{step_id}")
            seen.add(step_id)
        return self

    def step_id(self, index: int) -> str:
        """The step's stable id: its ``id`` or ``s<number>`` (1-based)."""
        return self.steps[index].id or f"s{index + 1}"


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class TemplateBundle:
    """A validated template frozen with its message files; in-flight enrolments keep the bundle they began
    with (it is stored in ``sop_versions``)."""

    template: SopTemplate
    raw: dict[str, Any]
    files: Mapping[str, str] = field(default_factory=dict)  # path relative to the SOP folder → text
    path: str = ""  # the YAML file, relative to the SOP folder

    @property
    def id(self) -> str:
        return self.template.id

    @property
    def version(self) -> str:
        digest = hashlib.sha256(_canonical({"template": self.raw, "files": dict(self.files)}).encode("utf-8"))
        return digest.hexdigest()[:16]

    def snapshot(self) -> dict[str, Any]:
        """What ``sop_versions.spec`` stores; :meth:`from_snapshot` rebuilds the same bundle."""
        return {"template": self.raw, "files": dict(self.files), "path": self.path}

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> TemplateBundle:
        raw = dict(snapshot["template"])
        return cls(SopTemplate.model_validate(raw), raw, dict(snapshot.get("files") or {}), str(snapshot["path"]))


__all__ = [
    "ACTIONS",
    "ACTION_KIND",
    "ATTACHMENTS_MAX",
    "CONTACT_ACTIONS",
    "EVENTS",
    "GROUP_ACTIONS",
    "STEP_ID",
    "TEMPLATE_ID",
    "AdvisorTask",
    "Attachment",
    "Exit",
    "Message",
    "NotifyStaff",
    "SopTemplate",
    "Step",
    "TemplateBundle",
    "Trigger",
]
