"""The contact policy (``sop_templates/policy.yaml``): quiet hours, per-contact caps, WeCom's group-send quota.

:func:`decide` is the one question the engine asks before it writes an outbound command: send now, wait
until a given instant, or skip. It is pure; the engine supplies the counts of what the contact already
received in the current day, week and quota window (all computed with the windows below).
"""

from __future__ import annotations

import calendar
import difflib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from scrm.errors import LianyiError
from scrm.timing import parse_clock

ACTION_KINDS = frozenset(
    {"welcome", "private_message", "advisor_task", "group_message", "tags", "notify_staff", "start_sop", "end"}
)
SOURCES = ("welcome", "lead", "sop", "campaign")
# kinds that count against (and are held back by) the per-contact caps
CAPPED_KINDS = frozenset({"private_message", "advisor_task"})
# kinds that use WeCom's group-send quota (add_msg_template single / group)
QUOTA_KINDS = frozenset({"private_message", "group_message"})
QuotaMode = Literal["days_in_month", "4_per_month", "7_per_week", "1_per_day"]
Verdict = Literal["send", "wait", "skip"]


class PolicyError(LianyiError):
    """policy.yaml cannot be used; ``line``/``col`` (1-based) point at the offending key or value."""

    def __init__(self, path: Path | str, line: int, col: int, message_cn: str) -> None:
        super().__init__(f"{path}:{line}:{col} {message_cn}")
        self.path = str(path)
        self.line = line
        self.col = col
        self.message_cn = message_cn


def _clock(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 21:00 unquoted as 1260
        value = f"{value // 60:02d}:{value % 60:02d}"
    if not isinstance(value, str):
        raise PydanticCustomError("bad_time", '时间应写成 "HH:MM"，如 "21:00"')
    try:
        return parse_clock(value)
    except ValueError as exc:
        raise PydanticCustomError("bad_time", str(exc)) from None


Clock = Annotated[time, BeforeValidator(_clock)]
Count = Annotated[int, Field(strict=True, ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuietHours(_Frozen):
    """Customers receive nothing in ``[start, end)`` (local time); start == end means no quiet hours."""

    start: Clock = time(21, 0)
    end: Clock = time(9, 0)


class Caps(_Frozen):
    """Sends per contact across SOPs, campaigns and advisor tasks; 0 = no cap."""

    per_day: Count = 2
    per_week: Count = 5

    @field_validator("per_week")
    @classmethod
    def _week_holds_a_day(cls, per_week: int, info: ValidationInfo) -> int:
        per_day = info.data.get("per_day")
        if per_week and isinstance(per_day, int) and per_day > per_week:
            raise PydanticCustomError("caps_order", f"per_day（{per_day}）不能大于 per_week（{per_week}）")
        return per_week


class GroupSendQuota(_Frozen):
    mode: QuotaMode = "days_in_month"


class Policy(_Frozen):
    timezone: str = "Asia/Shanghai"
    quiet_hours: QuietHours = QuietHours()
    quiet_hours_exempt: frozenset[str] = frozenset({"welcome", "tags"})
    caps: Caps = Caps()
    group_send_quota: GroupSendQuota = GroupSendQuota()
    on_limit: Literal["defer", "skip"] = "defer"
    max_defer_days: Count = 7
    priority: tuple[str, ...] = SOURCES

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError("bad_timezone", f"未知的时区：{value}，如 Asia/Shanghai") from None
        return value

    @field_validator("quiet_hours_exempt")
    @classmethod
    def _known_kinds(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = sorted(value - ACTION_KINDS)
        if unknown:
            kind = unknown[0]
            message = f"未知的动作类型：{kind}{_did_you_mean(kind, ACTION_KINDS)}"
            raise PydanticCustomError("unknown_kind", message, {"item": kind})
        return value

    @field_validator("priority")
    @classmethod
    def _known_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for source in value:
            if source not in SOURCES:
                message = f"未知的来源：{source}{_did_you_mean(source, SOURCES)}"
                raise PydanticCustomError("unknown_source", message, {"item": source})
        if len(set(value)) != len(value):
            raise PydanticCustomError("duplicate_source", "priority 中有重复的来源")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0, 0), tzinfo=self.tz).astimezone(UTC)

    def quiet_for(self, kind: str) -> bool:
        """Whether quiet hours hold this action kind back (False for the exempt kinds)."""
        return kind not in self.quiet_hours_exempt

    def in_quiet_hours(self, at: datetime) -> bool:
        start, end = self.quiet_hours.start, self.quiet_hours.end
        wall = _aware(at).astimezone(self.tz).time()
        if start < end:
            return start <= wall < end
        if start > end:  # the window crosses midnight
            return wall >= start or wall < end
        return False

    def next_allowed(self, at: datetime) -> datetime:
        """``at`` itself (in UTC) when sending is allowed, else the end of its quiet window."""
        if not self.in_quiet_hours(at):
            return at.astimezone(UTC)
        local = at.astimezone(self.tz)
        end_day = local.date()
        if self.quiet_hours.start > self.quiet_hours.end and local.time() >= self.quiet_hours.start:
            end_day += timedelta(days=1)
        return datetime.combine(end_day, self.quiet_hours.end, tzinfo=self.tz).astimezone(UTC)

    def day_window(self, at: datetime) -> tuple[datetime, datetime]:
        day = _aware(at).astimezone(self.tz).date()
        return self._local_midnight(day), self._local_midnight(day + timedelta(days=1))

    def week_window(self, at: datetime) -> tuple[datetime, datetime]:
        """The ISO week (Monday 00:00 to the next Monday 00:00, local) holding ``at``."""
        day = _aware(at).astimezone(self.tz).date()
        monday = day - timedelta(days=day.isoweekday() - 1)
        return self._local_midnight(monday), self._local_midnight(monday + timedelta(days=7))

    def month_window(self, at: datetime) -> tuple[datetime, datetime]:
        day = _aware(at).astimezone(self.tz).date()
        first = day.replace(day=1)
        following = date(first.year + 1, 1, 1) if first.month == 12 else first.replace(month=first.month + 1)
        return self._local_midnight(first), self._local_midnight(following)

    def quota_window(self, at: datetime) -> tuple[datetime, datetime]:
        """The window WeCom's group-send quota is counted in, for the configured mode."""
        mode = self.group_send_quota.mode
        if mode in ("days_in_month", "4_per_month"):
            return self.month_window(at)
        if mode == "7_per_week":
            return self.week_window(at)
        return self.day_window(at)

    def quota_limit(self, at: datetime) -> int:
        """How many group sends one customer (or group) may receive in ``at``'s quota window."""
        mode = self.group_send_quota.mode
        if mode == "days_in_month":
            local = _aware(at).astimezone(self.tz)
            return calendar.monthrange(local.year, local.month)[1]
        return {"4_per_month": 4, "7_per_week": 7, "1_per_day": 1}[mode]

    def rank(self, source: str) -> int:
        """Position in ``priority`` (lower wins); an unlisted source ranks after every listed one."""
        return self.priority.index(source) if source in self.priority else len(self.priority)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {at!r}")
    return at


@dataclass(frozen=True)
class Decision:
    """``send`` now, ``wait`` until ``not_before``, or ``skip``; ``reason`` is a code ("ok" for a send)."""

    verdict: Verdict
    not_before: datetime | None
    reason: str


def decide(
    policy: Policy,
    *,
    kind: str,
    at: datetime,
    due_since: datetime,
    touches_today: int,
    touches_week: int,
    quota_used: int | None,
) -> Decision:
    """What to do with a send of ``kind`` due since ``due_since``, asked at ``at``.

    Rules in order: quiet hours (unless the kind is exempt) → wait for their end; a per-contact cap
    (capped kinds only) or the group-send quota (quota kinds, when ``quota_used`` is given) reached →
    wait for the window that frees it (``on_limit: defer``) or skip; a wait ending later than
    ``due_since + max_defer_days`` → skip (``defer_expired``). A wait is only a proposal: the engine asks
    again at ``not_before`` with fresh counts.
    """
    _aware(at)
    if policy.quiet_for(kind) and policy.in_quiet_hours(at):
        return _wait(policy, policy.next_allowed(at), due_since, "quiet_hours")
    limits: list[tuple[str, datetime]] = []
    if kind in CAPPED_KINDS:
        if policy.caps.per_week and touches_week >= policy.caps.per_week:
            limits.append(("cap_week", policy.week_window(at)[1]))
        if policy.caps.per_day and touches_today >= policy.caps.per_day:
            limits.append(("cap_day", policy.day_window(at)[1]))
    if kind in QUOTA_KINDS and quota_used is not None and quota_used >= policy.quota_limit(at):
        limits.append(("quota", policy.quota_window(at)[1]))
    if not limits:
        return Decision("send", None, "ok")
    reason, free_from = max(limits, key=lambda limit: limit[1])
    if policy.on_limit == "skip":
        return Decision("skip", None, reason)
    not_before = policy.next_allowed(free_from) if policy.quiet_for(kind) else free_from
    return _wait(policy, not_before, due_since, reason)


def _wait(policy: Policy, not_before: datetime, due_since: datetime, reason: str) -> Decision:
    if not_before > due_since + timedelta(days=policy.max_defer_days):
        return Decision("skip", None, "defer_expired")
    return Decision("wait", not_before, reason)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"，是不是 {close[0]}？" if close else ""


def load_policy(path: Path | str) -> Policy:
    """Read policy.yaml; a missing (or empty) file gives the defaults. Raises :class:`PolicyError`."""
    file = Path(path)
    if not file.exists():
        return Policy()
    text = file.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PolicyError(file, line, col, f"YAML 语法错误：{exc.problem or exc}") from None
    if data is None:
        return Policy()
    if not isinstance(data, dict) or root is None:
        raise PolicyError(file, 1, 1, "policy.yaml 的顶层应是键值映射")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        node, key_node = _locate(root, error["loc"])
        target = key_node if error["type"] == "extra_forbidden" and key_node is not None else node
        item = (error.get("ctx") or {}).get("item")
        if isinstance(target, yaml.SequenceNode) and item is not None:  # point at the bad list entry
            target = next((entry for entry in target.value if getattr(entry, "value", None) == item), target)
        mark = target.start_mark
        raise PolicyError(file, mark.line + 1, mark.column + 1, _message(error)) from None


def _locate(root: yaml.Node, loc: tuple[int | str, ...]) -> tuple[yaml.Node, yaml.Node | None]:
    """The YAML node at ``loc`` (as deep as it exists) and the key node naming it, if any."""
    node, key_node = root, None
    for part in loc:
        found = False
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node, key_node, found = value, key, True
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node, key_node, found = node.value[part], None, True
        if not found:
            break
    return node, key_node


_MODEL_FIELDS: dict[str, type[BaseModel]] = {
    "": Policy,
    "quiet_hours": QuietHours,
    "caps": Caps,
    "group_send_quota": GroupSendQuota,
}


def _message(error: ErrorDetails) -> str:
    """A Chinese message for one pydantic error."""
    loc = tuple(str(part) for part in error["loc"])
    name = ".".join(loc) or "policy.yaml"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        model = _MODEL_FIELDS.get(".".join(loc[:-1]), Policy)
        return f"未知的键：{name}{_did_you_mean(loc[-1], model.model_fields)}"
    if kind in ("bad_time", "caps_order", "bad_timezone", "unknown_kind", "unknown_source", "duplicate_source"):
        return f"{name}：{error['msg']}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("' or '", "', '")
        return f"{name} 的值无效：{error['input']!r}，可选 {choices}"
    if kind.startswith("int"):
        return f"{name} 应为整数，实际为 {error['input']!r}"
    if kind == "greater_than_equal":
        return f"{name} 不能小于 {ctx.get('ge')}（0 表示不限）"
    if kind in ("model_type", "dict_type"):
        return f"{name} 应是键值映射"
    if kind in ("frozen_set_type", "tuple_type", "list_type"):
        return f"{name} 应是列表"
    if kind == "string_type":
        return f"{name} 应为字符串"
    return f"{name} 的值无效：{error['msg']}"
