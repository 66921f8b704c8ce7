"""The grammar of opening hours (see :mod:`scrm.leads.calendar` for the format): text → a weekly pattern of
open spans and closed date ranges, with every error at its 1-based column in Chinese."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date

from scrm.errors import LianyiError

DAY_MINUTES = 24 * 60
Span = tuple[int, int]  # minutes since local midnight, [start, end)
DateRange = tuple[date, date]  # inclusive

_DAY_NAMES: dict[str, int] = {}
for _index, _names in enumerate(
    (
        ("mon", "monday", "周一", "星期一", "礼拜一"),
        ("tue", "tues", "tuesday", "周二", "星期二", "礼拜二"),
        ("wed", "wednesday", "周三", "星期三", "礼拜三"),
        ("thu", "thur", "thurs", "thursday", "周四", "星期四", "礼拜四"),
        ("fri", "friday", "周五", "星期五", "礼拜五"),
        ("sat", "saturday", "周六", "星期六", "礼拜六"),
        ("sun", "sunday", "周日", "周天", "星期日", "星期天", "礼拜日", "礼拜天"),
    )
):
    for _name in _names:
        _DAY_NAMES[_name] = _index
_EVERY_DAY = {"daily", "everyday", "每天", "每日"}
_CLOSED_WORDS = ("closed", "休息", "off")
CN_DAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")

_CLAUSE_SEP = re.compile(r"[;；]")
_LIST_SEP = re.compile(r"[,，、]")
_DAY_RANGE_SEP = re.compile(r"\s*(?:-|~|～|–|至|到)\s*")
_SPAN = re.compile(r"(\d{1,2})[:：](\d{2})\s*(?:-|~|～|–|至|到)\s*(\d{1,2})[:：](\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_RANGE_SEP = re.compile(r"\s*(?:\.\.|~|～|至|到)\s*")
_CLOSED_CLAUSE = re.compile(r"(closed|休息)(?![a-z])\s*[:：]?\s*", re.IGNORECASE)


class HoursError(LianyiError):
    """An opening-hours string cannot be used; ``message`` is Chinese, ``column`` 1-based in the string."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message}（第 {column} 个字符）")


def parse_pattern(text: str) -> tuple[tuple[tuple[Span, ...], ...], tuple[DateRange, ...]]:
    """The week (index 0 = Monday) and the merged closed ranges ``text`` describes; raises :class:`HoursError`."""
    week: list[tuple[Span, ...] | None] = [None] * 7
    closed: list[DateRange] = []
    for clause, offset in _pieces(text, _CLAUSE_SEP, 0):
        if not clause:
            continue
        keyword = _CLOSED_CLAUSE.match(clause)
        if keyword:
            closed.extend(_parse_dates(clause[keyword.end() :], offset + keyword.end()))
            continue
        days, spans = _parse_weekday_clause(clause, offset)
        for day in days:
            week[day] = spans  # a later clause for the same day replaces the earlier one
    if all(day is None for day in week):
        full: tuple[tuple[Span, ...], ...] = tuple(((0, DAY_MINUTES),) for _ in range(7))
    else:
        full = tuple(day or () for day in week)
    return full, _merge_ranges(closed)


def _pieces(text: str, separator: re.Pattern[str], offset: int) -> Iterator[tuple[str, int]]:
    """``text`` split on ``separator``: each piece stripped, with its 0-based position in the whole string
    (where the stripped piece starts; an empty piece points where it would be)."""
    start = 0
    for match in [*separator.finditer(text), None]:
        end = match.start() if match else len(text)
        raw = text[start:end]
        stripped = raw.strip()
        lead = len(raw) - len(raw.lstrip()) if stripped else 0
        yield stripped, offset + start + lead
        if match:
            start = match.end()


def _parse_weekday_clause(clause: str, offset: int) -> tuple[set[int], tuple[Span, ...]]:
    digit = re.search(r"\d", clause)
    closed_word = re.search(r"(?<![a-z])(closed|休息|off)\s*$", clause, re.IGNORECASE)
    if closed_word and (digit is None or digit.start() > closed_word.start()):
        split = closed_word.start()
    elif digit is not None:
        split = digit.start()
    else:
        raise HoursError(f"“{clause}” 缺少时间段（例如 09:00-18:00，或写 closed 表示休息）", offset + len(clause) + 1)
    days_text = clause[:split].rstrip()
    if not days_text:
        raise HoursError("时间段前缺少星期（例如 mon-fri、周一-周五、daily、每天）", offset + 1)
    days = _parse_days(days_text, offset)
    if closed_word and split == closed_word.start():
        return days, ()
    return days, _parse_spans(clause[split:], offset + split)


def _parse_days(text: str, offset: int) -> set[int]:
    days: set[int] = set()
    for item, position in _pieces(text, _LIST_SEP, offset):
        if not item:
            raise HoursError("星期列表中有空项（多余的逗号或顿号）", position + 1)
        if item.lower() in _EVERY_DAY:
            days.update(range(7))
            continue
        bounds = _DAY_RANGE_SEP.split(item)
        if len(bounds) > 2:
            raise HoursError(f"星期范围 “{item}” 无效，应写成 mon-fri 或 周一-周五", position + 1)
        numbers: list[int] = []
        cursor = 0
        for name in bounds:
            at = item.index(name, cursor) if name else cursor
            cursor = at + len(name)
            day = _DAY_NAMES.get(name.lower())
            if not name:
                raise HoursError(f"星期范围 “{item}” 不完整，应写成 mon-fri 或 周一-周五", position + 1)
            if day is None:
                raise HoursError(f"无法识别的星期 “{name}”，可写 mon…sun、周一…周日、daily 或 每天", position + at + 1)
            numbers.append(day)
        first, last = numbers[0], numbers[-1]
        days.update((first + step) % 7 for step in range((last - first) % 7 + 1))
    return days


def _parse_spans(text: str, offset: int) -> tuple[Span, ...]:
    spans: list[tuple[Span, int]] = []
    for item, position in _pieces(text, _LIST_SEP, offset):
        if not item:
            raise HoursError("时间段列表中有空项（多余的逗号）", position + 1)
        match = _SPAN.fullmatch(item)
        if match is None:
            raise HoursError(f"时间段 “{item}” 无效，应写成 HH:MM-HH:MM（例如 09:00-18:00）", position + 1)
        start = _minute_of(match, 1, position, is_end=False)
        end = _minute_of(match, 3, position, is_end=True)
        if end == start:
            raise HoursError(f"时间段 “{item}” 的开始与结束相同", position + 1)
        if end < start:
            raise HoursError(
                f"时间段 “{item}” 跨过了午夜，请拆成两段，例如 fri 18:00-24:00; sat 00:00-02:00", position + 1
            )
        spans.append(((start, end), position))
    spans.sort()
    merged: list[Span] = []
    for (start, end), position in spans:
        if merged and start < merged[-1][1]:
            raise HoursError(f"时间段 {hhmm(start)}-{hhmm(end)} 与其他时间段重叠", position + 1)
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _minute_of(match: re.Match[str], group: int, position: int, *, is_end: bool) -> int:
    hours, minutes = int(match.group(group)), int(match.group(group + 1))
    column = position + match.start(group) + 1
    if hours == 24 and minutes == 0:
        if not is_end:
            raise HoursError("24:00 只能作为结束时间", column)
        return DAY_MINUTES
    if hours > 23 or minutes > 59:
        raise HoursError(f"时间 {match.group(group)}:{match.group(group + 1)} 无效（00:00 至 24:00）", column)
    return hours * 60 + minutes


def _parse_dates(text: str, offset: int) -> list[DateRange]:
    ranges: list[DateRange] = []
    pieces = list(_pieces(text, _LIST_SEP, offset))
    if pieces == [("", offset)]:
        raise HoursError("closed / 休息 后缺少日期（例如 closed 2026-10-01,2026-10-03..2026-10-07）", offset + 1)
    for item, position in pieces:
        if not item:
            raise HoursError("日期列表中有空项（多余的逗号）", position + 1)
        bounds = _DATE_RANGE_SEP.split(item)
        if len(bounds) > 2:
            raise HoursError(f"日期范围 “{item}” 无效，应写成 2026-10-03..2026-10-07", position + 1)
        days: list[date] = []
        cursor = 0
        for bound in bounds:
            at = item.index(bound, cursor) if bound else cursor
            cursor = at + len(bound)
            days.append(_date_of(bound, position + at + 1))
        if days[-1] < days[0]:
            raise HoursError(f"日期范围 “{item}” 的结束早于开始", position + 1)
        ranges.append((days[0], days[-1]))
    return ranges


def _date_of(text: str, column: int) -> date:
    if not _DATE.fullmatch(text):
        raise HoursError(f"日期 “{text}” 无效，应写成 YYYY-MM-DD（例如 2026-10-01）", column)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HoursError(f"日期 {text} 不存在", column) from None


def _merge_ranges(ranges: list[DateRange]) -> tuple[DateRange, ...]:
    merged: list[DateRange] = []
    for start, end in sorted(ranges):
        if merged and (start - merged[-1][1]).days <= 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
