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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scrm.leads.hours_grammar import CN_DAYS, DAY_MINUTES, DateRange, HoursError, Span, hhmm, parse_pattern

__all__ = ["DEFAULT_TZ", "MAX_SEARCH_DAYS", "HoursError", "OpeningHours", "effective_hours"]

DEFAULT_TZ = "Asia/Shanghai"
MAX_SEARCH_DAYS = 400  # how far next_open / add_open_minutes look ahead before giving up


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
        week, closed = parse_pattern(text)
        return cls(text=text, tz=zone.key, week=week, closed=closed)

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


def _spans_text(spans: tuple[Span, ...]) -> str:
    return "，".join(f"{hhmm(start)}-{hhmm(end)}" for start, end in spans)


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
            texts.append(f"{CN_DAYS[run[0]]}至{CN_DAYS[run[-1]]}")
        else:
            texts.extend(CN_DAYS[day] for day in run)
    return "、".join(texts)
