"""Step timing: durations, wall-clock times, weekdays and cron schedules, all in China time.

Every function here is pure. Instants are timezone-aware; the database keeps them in UTC and these
functions return UTC, while wall-clock rules (``at: "10:00"``, weekdays, cron) are read in Asia/Shanghai.

Cron expressions are **standard crontab** (``minute hour day month weekday``; weekday 0 or 7 = Sunday,
1 = Monday … 6 = Saturday, or ``sun``…``sat``). APScheduler 3 numbers weekdays differently (0 = Monday,
see the warning on ``CronTrigger.from_crontab``), so the weekday field is translated to weekday names
before APScheduler sees it: ``0 10 * * 5`` fires on Fridays at 10:00. One more difference from classic
cron remains and is intended: when both day-of-month and weekday are restricted, APScheduler requires
both to match (classic cron fires when either matches).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

CHINA_TZ = ZoneInfo("Asia/Shanghai")

_DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DURATION_RE = re.compile(r"(?:\d+[mhdw])+")
_DURATION_PART_RE = re.compile(r"(\d+)([mhdw])")
_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})")

# ISO weekday numbers (Monday = 1) by every spelling operators use
_WEEKDAY_NAMES: dict[str, int] = {}
for _number, _names in enumerate(
    (
        ("mon", "monday", "周一", "星期一", "礼拜一"),
        ("tue", "tuesday", "周二", "星期二", "礼拜二"),
        ("wed", "wednesday", "周三", "星期三", "礼拜三"),
        ("thu", "thursday", "周四", "星期四", "礼拜四"),
        ("fri", "friday", "周五", "星期五", "礼拜五"),
        ("sat", "saturday", "周六", "星期六", "礼拜六"),
        ("sun", "sunday", "周日", "周天", "星期日", "星期天", "礼拜日", "礼拜天"),
    ),
    start=1,
):
    for _name in _names:
        _WEEKDAY_NAMES[_name] = _number

# standard cron weekday numbers (0 = Sunday) ↔ the names APScheduler understands unambiguously
_CRON_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_DAY_ITEM_RE = re.compile(r"(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?")
_CRON_FIELDS = (("minute", "分"), ("hour", "时"), ("day", "日"), ("month", "月"), ("day_of_week", "星期"))
MAX_CRON_FIRES = 10_000


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``3d``, ``1w`` or a combination such as ``1d12h`` (each unit at most once)."""
    cleaned = text.strip().lower()
    problem = f"时长格式无效：{text!r}，应为 30m / 2h / 3d / 1w（可组合，如 1d12h）"
    if not _DURATION_RE.fullmatch(cleaned):
        raise ValueError(problem)
    total = timedelta()
    seen: set[str] = set()
    for amount, unit in _DURATION_PART_RE.findall(cleaned):
        if unit in seen:
            raise ValueError(f"时长格式无效：{text!r}，单位 {unit} 重复出现")
        seen.add(unit)
        total += int(amount) * _DURATION_UNITS[unit]
    if total <= timedelta():
        raise ValueError(f"时长必须大于 0：{text!r}")
    return total


def parse_clock(text: str) -> time:
    """A wall-clock time ``HH:MM`` between 00:00 and 23:59."""
    match = _CLOCK_RE.fullmatch(text.strip())
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f'时间格式无效：{text!r}，应为 00:00 到 23:59 之间的 HH:MM，如 "10:00"')
    return time(int(match.group(1)), int(match.group(2)))


def parse_weekdays(values: list[str | int]) -> frozenset[int]:
    """ISO weekday numbers (Monday = 1 … Sunday = 7) from ``mon``/``周一``/``星期一``/``1`` spellings."""
    if not values:
        raise ValueError("星期不能为空，应为 mon..sun、周一..周日 或 1..7")
    days: set[int] = set()
    for value in values:
        day: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            day = value if 1 <= value <= 7 else None
        elif isinstance(value, str):
            key = value.strip().lower()
            day = int(key) if key.isdigit() and 1 <= int(key) <= 7 else _WEEKDAY_NAMES.get(key)
        if day is None:
            raise ValueError(f"无法识别的星期：{value!r}，应为 mon..sun、周一..周日 或 1..7（周一为 1）")
        days.add(day)
    return frozenset(days)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _local(day: date, wall: time) -> datetime:
    return datetime.combine(day, wall, tzinfo=CHINA_TZ)


def step_due(
    anchor: datetime,
    *,
    after: timedelta | None,
    at: time | None,
    weekdays: frozenset[int] | None,
) -> datetime:
    """When a step falls due, in UTC.

    ``base = anchor + after``; with ``at`` the first China wall time ``at`` not before ``base``; with
    ``weekdays`` the result rolls forward day by day (keeping the wall time) to an allowed weekday.
    """
    _require_aware(anchor, "anchor")
    if weekdays is not None and (not weekdays or not weekdays <= frozenset(range(1, 8))):
        raise ValueError(f"weekdays must be a non-empty subset of 1..7, got {weekdays!r}")
    base = (anchor + (after or timedelta())).astimezone(CHINA_TZ)
    if at is None and weekdays is None:
        return base.astimezone(UTC)
    wall = at if at is not None else base.time()
    due = _local(base.date(), wall)
    if due < base:
        due = _local(base.date() + timedelta(days=1), wall)
    if weekdays is not None:
        while due.isoweekday() not in weekdays:
            due = _local(due.date() + timedelta(days=1), wall)
    return due.astimezone(UTC)


def _cron_day_number(token: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValueError(f"星期数字 {token} 超出范围 0-7")
        return number % 7
    if token in _CRON_DAY_NAMES:
        return _CRON_DAY_NAMES.index(token)
    raise ValueError(f"无法识别的星期 {token!r}")


def _translate_cron_weekdays(field: str) -> str:
    """Standard cron weekday field → APScheduler weekday names (``1-5`` → ``mon,tue,wed,thu,fri``)."""
    field = field.lower()
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.split(","):
        match = _CRON_DAY_ITEM_RE.fullmatch(item)
        if match is None:
            raise ValueError(f"星期字段无效：{item!r}")
        step = int(match.group("step") or 1)
        if step < 1:
            raise ValueError(f"星期字段的步长必须大于 0：{item!r}")
        spec = match.group("range")
        if spec == "*":
            first, last = 0, 6
        else:
            first_text, _, last_text = spec.partition("-")
            first = _cron_day_number(first_text)
            # "7" as a range end means Sunday at the end of the week (5-7 = fri..sun)
            last = (7 if last_text == "7" else _cron_day_number(last_text)) if last_text else first
            if match.group("step") and not last_text:
                last = 6  # "a/n" means "from a to the end of the week, every n"
            if last < first:
                raise ValueError(f"星期范围无效：{item!r}（起点大于终点）")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_CRON_DAY_NAMES[day] for day in sorted(days))


def _cron_trigger(expr: str) -> CronTrigger:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron 表达式应有 5 个字段（分 时 日 月 星期），实际 {len(fields)} 个")
    fields[4] = _translate_cron_weekdays(fields[4])
    # one field at a time, so the message can say which field is wrong
    for (name, label), value in zip(_CRON_FIELDS, fields, strict=True):
        try:
            CronTrigger(**{name: value}, timezone=CHINA_TZ)
        except ValueError as exc:
            raise ValueError(f"{label}字段 {value!r} 无效（{exc}）") from None
    return CronTrigger.from_crontab(" ".join(fields), timezone=CHINA_TZ)


def validate_cron(expr: str) -> str | None:
    """A Chinese description of what is wrong with a crontab expression, or None when it is valid."""
    try:
        _cron_trigger(expr)
    except ValueError as exc:
        return f"cron 表达式无效：{expr!r}：{exc}"
    return None


def next_cron_fire(expr: str, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (UTC), or None when the schedule never fires again."""
    _require_aware(after, "after")
    # APScheduler returns fire times >= now and rounds now up to the next whole second
    fire: datetime | None = _cron_trigger(expr).get_next_fire_time(None, after + timedelta(microseconds=1))
    return None if fire is None else fire.astimezone(UTC)


def cron_fires_between(expr: str, start: datetime, end: datetime, *, limit: int = MAX_CRON_FIRES) -> list[datetime]:
    """Fire times in ``[start, end)`` (UTC), at most ``limit`` of them (for dry runs)."""
    _require_aware(start, "start")
    _require_aware(end, "end")
    trigger = _cron_trigger(expr)
    fires: list[datetime] = []
    fire: datetime | None = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end and len(fires) < limit:
        fires.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return fires
