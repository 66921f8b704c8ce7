"""What a dry run of an SOP template found (:mod:`scrm.sop.dryrun`): entrants, planned steps, messages per
day, cap and quota conflicts; :meth:`DryRunReport.to_json` is the machine-readable form."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from scrm.timing import CHINA_TZ

READING_EVENT = "当前符合受众和触发条件的对象，视为在开始时刻同时触发"
READING_SILENT = "开始时已沉默满 days 天的客户立即进入；窗口内将满 days 天的客户在那一刻进入（假设一直沉默）"
READING_SCHEDULE = "窗口内每次定时触发 × 当时符合受众的对象"

# reasons (engine / policy codes) → what operators read
REASON_CN: dict[str, str] = {
    "ok": "发送",
    "quiet_hours": "免打扰时段",
    "cap_day": "每日触达上限",
    "cap_week": "每周触达上限",
    "quota": "群发额度",
    "defer_expired": "顺延超过上限天数，跳过",
    "when_false": "条件不满足",
    "when_error": "条件出错",
    "no_relation": "没有有效好友关系",
    "group_inactive": "群已解散或没有群主",
    "render_error": "渲染失败",
}
# per-day columns of the report: the actions that reach a customer or a group
MESSAGE_ACTIONS = ("welcome", "private_message", "advisor_task", "group_message")


@dataclass(frozen=True, slots=True)
class Entry:
    """A subject that would enter the template, and when."""

    subject_type: str
    subject_id: str
    name: str
    enrolled_at: datetime
    occurrence: str = ""


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step for one subject: when it falls due, when it would run, and what would happen."""

    subject_type: str
    subject_id: str
    step_id: str
    action: str
    due_at: datetime
    at: datetime
    outcome: str  # sent | done | skipped
    reason: str  # "ok", or why it was skipped
    deferred: tuple[str, ...] = ()  # the policy's reasons for each wait before it ran

    @property
    def day(self) -> date:
        return self.at.astimezone(CHINA_TZ).date()


@dataclass(frozen=True, slots=True)
class Conflict:
    """A cap or quota reached for one subject on one (China) day, or a send given up after deferring."""

    subject_type: str
    subject_id: str
    day: date
    reason: str  # cap_day | cap_week | quota | defer_expired
    step_id: str
    used: int
    limit: int


@dataclass
class DryRunReport:
    template_id: str
    name: str
    kind: str
    version: str
    enabled: bool
    trigger: str  # event name or "schedule"
    start: datetime
    end: datetime
    reading: str
    step_ids: list[str] = field(default_factory=list)  # the template's steps, in order
    entries: list[Entry] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)  # exit reason → subjects left out
    steps: list[PlannedStep] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    later: int = 0  # steps that would fall due after the window

    def per_day(self) -> dict[date, Counter[str]]:
        """Messages (MESSAGE_ACTIONS) that would go out, by China day, every day of the window listed."""
        days: dict[date, Counter[str]] = {}
        first, last = self.start.astimezone(CHINA_TZ).date(), (self.end - timedelta(seconds=1)).astimezone(CHINA_TZ)
        day = first
        while day <= last.date():
            days[day] = Counter()
            day += timedelta(days=1)
        for step in self.steps:
            if step.outcome == "sent" and step.action in MESSAGE_ACTIONS:
                days.setdefault(step.day, Counter())[step.action] += 1
        return days

    def to_json(self) -> dict[str, Any]:
        def moment(value: datetime) -> str:
            return value.astimezone(CHINA_TZ).isoformat()

        return {
            "template": {
                "id": self.template_id,
                "name": self.name,
                "kind": self.kind,
                "version": self.version,
                "enabled": self.enabled,
                "trigger": self.trigger,
            },
            "window": {"from": moment(self.start), "to": moment(self.end)},
            "reading": self.reading,
            "step_ids": list(self.step_ids),
            "entries": [{**asdict(e), "enrolled_at": moment(e.enrolled_at)} for e in self.entries],
            "excluded": dict(self.excluded),
            "steps": [
                {**asdict(s), "due_at": moment(s.due_at), "at": moment(s.at), "deferred": list(s.deferred)}
                for s in self.steps
            ],
            "per_day": [
                {"date": day.isoformat(), **{a: counts[a] for a in MESSAGE_ACTIONS}, "total": sum(counts.values())}
                for day, counts in sorted(self.per_day().items())
            ],
            "conflicts": [{**asdict(c), "day": c.day.isoformat()} for c in self.conflicts],
            "later": self.later,
        }
