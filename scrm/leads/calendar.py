"""Opening hours and business-minute arithmetic (pure: no database, no clock).

One string describes when a dealer is open (``Dealer.opening_hours``) or an advisor is on duty
(``Staff.duty_hours``)::

    mon-fri 09:00-18:00; sat,sun 10:00-17:00
    daily 09:00-18:00
    mon-fri 09:00-12:00,13:30-18:00; fri-mon 10:00-16:00
    周一-周五 09:00-18:00；周六、周日 10:00-17:00；每天 …
    daily 09:00-18:00; sun closed; closed 2026-10-01,2026-10-03..2026-10-07

- Clauses are separated by ``;`` (or ``；``). A weekday clause is days, then spans: days are ``mon`` … ``sun``
  (``周一`` … ``周日``/``周天``, ``星期一`` …), ranges ``mon-fri`` that may wrap (``fri-mon`` = Fri, Sat, Sun,
  Mon), lists joined by ``,`` or ``、``, or ``daily`` / ``每天``. Spans are ``HH:MM-HH:MM`` joined by ``,``; ``24:00``
  may end a span; ``closed`` / ``休息`` instead of spans closes those days.
- **A later clause for the same day replaces the earlier one** (``daily 09:00-18:00; sun closed``).
- A span may not cross midnight: write ``fri 18:00-24:00; sat 00:00-02:00`` (the two spans join up).
- ``closed 2026-10-01,2026-10-03..2026-10-07`` (or ``休息 …``) closes whole local dates, whatever the weekday.
- Days no weekday clause names are closed; with no weekday clause at all every day is open 00:00-24:00.
  The empty string is always open.

Times are wall-clock times in the calendar's zone (default Asia/Shanghai). Arithmetic runs on UTC instants,
so results are exact to the microsecond and correct across DST changes in any zone. Results come back in the
zone of the argument.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scrm.errors import LianyiError

__all__ = ["DEFAULT_TZ", "MAX_SEARCH_DAYS", "HoursError", "OpeningHours", "effective_hours"]

DEFAULT_TZ = "Asia/Shanghai"
MAX_SEARCH_DAYS = 400  # how far next_open / add_open_minutes look ahead before giving up
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
_CN_DAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")

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


@dataclass(frozen=True)
class OpeningHours:
    """A weekly pattern of open spans plus closed dates, in one time zone (see the module docstring)."""

    text: str
    tz: str
    week: tuple[tuple[Span, ...], ...]  # index 0 = Monday
    closed: tuple[DateRange, ...] = ()  # sorted, merged
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", ZoneInfo(self.tz))

    @classmethod
    def parse(cls, text: str, tz: str = DEFAULT_TZ) -> OpeningHours:
        """Parse ``text``; raises :class:`HoursError` pointing at the first problem."""
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise HoursError(f"未知的时区 “{tz}”", 1) from None
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
        return cls(text=text, tz=zone.key, week=full, closed=_merge_ranges(closed))

    @property
    def always_open(self) -> bool:
        return not self.closed and all(day == ((0, DAY_MINUTES),) for day in self.week)

    @property
    def never_open(self) -> bool:
        """No weekday has any open span (closed dates aside, it can never open)."""
        return all(not day for day in self.week)

    def is_open(self, at: datetime) -> bool:
        moment = _utc(at)
        if self.always_open:
            return True
        day = moment.astimezone(self.zone).date()
        return any(start <= moment < end for start, end in self._intervals(_shift(day, -1), _shift(day, 1)))

    def next_open(self, at: datetime) -> datetime | None:
        """``at`` itself when open, else the next opening; None when it does not open within 400 days."""
        moment = _utc(at)
        if self.always_open:
            return at
        for start, end in self._intervals_from(moment):
            if end > moment:
                return at if start <= moment else start.astimezone(at.tzinfo)
        return None

    def add_open_minutes(self, start: datetime, minutes: float) -> datetime:
        """The instant ``minutes`` of open time after ``start`` (a business-minute deadline).

        Counting starts at ``start`` when open, else at the next opening; a result that lands exactly on a
        closing time stays there (17:55 + 5 min = 18:00). Raises :class:`HoursError` when the calendar does
        not offer that much open time within 400 days of ``start``."""
        if minutes < 0:
            raise ValueError(f"minutes must not be negative (got {minutes})")
        moment = _utc(start)
        remaining = timedelta(minutes=minutes)
        if self.always_open:
            return start + remaining
        for open_at, close_at in self._intervals_from(moment):
            if close_at <= moment:
                continue
            begin = max(open_at, moment)
            if remaining <= close_at - begin:
                return (begin + remaining).astimezone(start.tzinfo)
            remaining -= close_at - begin
        raise HoursError(f"营业时间过少：{MAX_SEARCH_DAYS} 天内凑不够 {minutes:g} 分钟的营业时间", 1)

    def open_minutes_between(self, a: datetime, b: datetime) -> float:
        """Open minutes in ``[a, b)``; negative when ``b`` is before ``a``."""
        first, last = _utc(a), _utc(b)
        if last < first:
            return -self.open_minutes_between(b, a)
        if self.always_open:
            return (last - first).total_seconds() / 60
        total = timedelta()
        first_day = _shift(first.astimezone(self.zone).date(), -1)
        last_day = _shift(last.astimezone(self.zone).date(), 1)
        for start, end in self._intervals(first_day, last_day):
            overlap = min(end, last) - max(start, first)
            if overlap > timedelta():
                total += overlap
        return total.total_seconds() / 60

    def describe(self) -> str:
        """Chinese summary, e.g. ``周一至周五 09:00-18:00；周六、周日 10:00-17:00；休息日：2026-10-01``."""
        if self.always_open:
            return "全天营业"
        parts: list[str] = []
        if self.never_open:
            parts.append("不营业")
        elif all(day == self.week[0] for day in self.week):
            parts.append(f"每天 {_spans_text(self.week[0])}")
        else:
            groups: dict[tuple[Span, ...], list[int]] = {}
            for index, spans in enumerate(self.week):
                if spans:
                    groups.setdefault(spans, []).append(index)
            for spans, days in groups.items():
                parts.append(f"{_days_text(days)} {_spans_text(spans)}")
        if self.closed:
            dates = "、".join(str(a) if a == b else f"{a}至{b}" for a, b in self.closed)
            parts.append(f"休息日：{dates}")
        return "；".join(parts)

    # -- open intervals as UTC instants --------------------------------------------------------------

    def _closed_range(self, day: date) -> DateRange | None:
        index = bisect.bisect_right(self.closed, (day, date.max)) - 1
        if index >= 0 and self.closed[index][0] <= day <= self.closed[index][1]:
            return self.closed[index]
        return None

    def _local(self, day: date, minute: int) -> datetime:
        if minute >= DAY_MINUTES:
            day, minute = day + timedelta(days=1), minute - DAY_MINUTES
        wall = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)
        return wall.astimezone(UTC)

    def _day_intervals(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        for start, end in self.week[day.weekday()]:
            yield self._local(day, start), self._local(day, end)

    def _intervals(self, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals of local days ``first``..``last`` in order, never overlapping (closed dates skipped)."""
        day = first
        previous_end: datetime | None = None
        while day <= last:
            closed = self._closed_range(day)
            if closed is not None:
                if closed[1] >= last:
                    return
                day = closed[1] + timedelta(days=1)
                continue
            for start, end in self._day_intervals(day):
                if previous_end is not None and start < previous_end:
                    start = previous_end  # a DST fold could make adjacent wall-clock spans overlap
                if end > start:
                    previous_end = end
                    yield start, end
            day += timedelta(days=1)

    def _intervals_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        first = _shift(moment.astimezone(self.zone).date(), -1)
        return self._intervals(first, _shift(first, MAX_SEARCH_DAYS + 1))


def effective_hours(dealer_hours: str, duty_hours: str, tz: str = DEFAULT_TZ) -> OpeningHours:
    """A staff member's on-duty time: their ``duty_hours`` when set, else their dealer's opening hours.

    Parsed calendars are cached (they are immutable): routing asks this for every candidate of every lead."""
    return _parse_cached(duty_hours if duty_hours.strip() else dealer_hours, tz)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, tz: str) -> OpeningHours:
    return OpeningHours.parse(text, tz)


# -- parsing helpers -----------------------------------------------------------------------------------


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
            raise HoursError(f"时间段 {_hhmm(start)}-{_hhmm(end)} 与其他时间段重叠", position + 1)
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


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("opening-hours arithmetic needs a timezone-aware datetime")
    return moment.astimezone(UTC)


def _shift(day: date, days: int) -> date:
    """``day`` moved by ``days``, kept where a local day and the day after it still exist."""
    lowest, highest = date.min + timedelta(days=1), date.max - timedelta(days=2)
    if days >= 0:
        return highest if day >= highest - timedelta(days=days) else day + timedelta(days=days)
    return lowest if day <= lowest - timedelta(days=days) else day + timedelta(days=days)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _spans_text(spans: tuple[Span, ...]) -> str:
    return "，".join(f"{_hhmm(start)}-{_hhmm(end)}" for start, end in spans)


def _days_text(days: list[int]) -> str:
    runs: list[list[int]] = []
    for day in days:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    texts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            texts.append(f"{_CN_DAYS[run[0]]}至{_CN_DAYS[run[-1]]}")
        else:
            texts.extend(_CN_DAYS[day] for day in run)
    return "、".join(texts)
