"""Step timing: parsing, due times across month/year ends and leap days, standard-cron weekdays."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from scrm.timing import (
    CHINA_TZ,
    cron_fires_between,
    next_cron_fire,
    parse_clock,
    parse_duration,
    parse_weekdays,
    step_due,
    validate_cron,
)


def china(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w2d3h4m", timedelta(weeks=1, days=2, hours=3, minutes=4)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "0m", "0d0h", "-1h", "1x", "h", "1.5h", "1h1h", "2 hours", "1h 2m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="时长"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("00:00", time(0, 0)), ("23:59", time(23, 59)), ("09:05", time(9, 5)), ("9:05", time(9, 5))],
)
def test_parse_clock(text: str, expected: time) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize("text", ["24:00", "12:60", "1200", "ab:cd", "", "10:0", "-1:00", "10:00:00"])
def test_parse_clock_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="时间格式无效"):
        parse_clock(text)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["mon", "FRI"], {1, 5}),
        (["周一", "周日", "周天"], {1, 7}),
        (["星期三", "星期天"], {3, 7}),
        ([1, 7, "6"], {1, 6, 7}),
        (["sunday", "saturday"], {6, 7}),
    ],
)
def test_parse_weekdays(values: list[str | int], expected: set[int]) -> None:
    assert parse_weekdays(values) == frozenset(expected)


@pytest.mark.parametrize("values", [[0], [8], ["funday"], ["0"], [True], [], ["周八"]])
def test_parse_weekdays_rejects(values: list[str | int]) -> None:
    with pytest.raises(ValueError, match="星期"):
        parse_weekdays(values)


ANCHOR = china(2026, 11, 23, 15, 20)  # a Monday afternoon


def test_immediately_is_the_anchor() -> None:
    due = step_due(ANCHOR, after=None, at=None, weekdays=None)
    assert due == ANCHOR
    assert due.tzinfo == UTC


def test_after_only() -> None:
    assert step_due(ANCHOR, after=timedelta(hours=2), at=None, weekdays=None) == china(2026, 11, 23, 17, 20)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (time(16, 0), china(2026, 11, 23, 16, 0)),  # later today
        (time(10, 0), china(2026, 11, 24, 10, 0)),  # already past: tomorrow
        (time(15, 20), china(2026, 11, 23, 15, 20)),  # exactly now counts
    ],
)
def test_at_is_the_next_such_wall_time(at: time, expected: datetime) -> None:
    assert step_due(ANCHOR, after=None, at=at, weekdays=None) == expected


def test_after_then_at() -> None:
    # three days later (Thursday 15:20), then the next 10:00 is Friday
    due = step_due(ANCHOR, after=timedelta(days=3), at=time(10, 0), weekdays=None)
    assert due == china(2026, 11, 27, 10, 0)


def test_at_is_read_in_china_time_for_a_utc_anchor() -> None:
    # 17:30 UTC on the 23rd is 01:30 on the 24th in Shanghai: 10:00 the same local day
    anchor = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)
    due = step_due(anchor, after=None, at=time(10, 0), weekdays=None)
    assert due == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def test_weekdays_keep_the_wall_time() -> None:
    due = step_due(ANCHOR, after=timedelta(days=1), at=None, weekdays=frozenset({5}))
    assert due == china(2026, 11, 27, 15, 20)


def test_weekdays_with_at() -> None:
    due = step_due(ANCHOR, after=None, at=time(9, 0), weekdays=frozenset({1, 3}))
    assert due == china(2026, 11, 25, 9, 0)  # Monday 09:00 is past, Tuesday not allowed → Wednesday


def test_weekday_already_allowed_stays() -> None:
    assert step_due(ANCHOR, after=None, at=time(18, 0), weekdays=frozenset({1})) == china(2026, 11, 23, 18, 0)


@pytest.mark.parametrize(
    ("anchor", "after", "at", "expected"),
    [
        (china(2026, 1, 31, 22, 0), None, time(10, 0), china(2026, 2, 1, 10, 0)),  # month end
        (china(2026, 12, 31, 22, 0), None, time(10, 0), china(2027, 1, 1, 10, 0)),  # year end
        (china(2028, 2, 28, 12, 0), None, time(10, 0), china(2028, 2, 29, 10, 0)),  # leap day
        (china(2027, 2, 28, 12, 0), None, time(10, 0), china(2027, 3, 1, 10, 0)),  # no leap day
        (china(2028, 2, 27, 12, 0), timedelta(days=2), None, china(2028, 2, 29, 12, 0)),
        (china(2026, 12, 30, 8, 0), timedelta(days=1, hours=12), time(9, 0), china(2027, 1, 1, 9, 0)),
        (china(2026, 4, 30, 23, 59), timedelta(minutes=1), None, china(2026, 5, 1, 0, 0)),
    ],
)
def test_calendar_edges(anchor: datetime, after: timedelta | None, at: time | None, expected: datetime) -> None:
    assert step_due(anchor, after=after, at=at, weekdays=None) == expected


def test_weekday_roll_across_year_end() -> None:
    # Thursday 31 Dec 2026 → the next Monday is 4 Jan 2027
    due = step_due(china(2026, 12, 31, 20, 0), after=None, at=time(10, 0), weekdays=frozenset({1}))
    assert due == china(2027, 1, 4, 10, 0)


def test_step_due_refuses_naive_anchor_and_empty_weekdays() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        step_due(datetime(2026, 1, 1), after=None, at=None, weekdays=None)
    with pytest.raises(ValueError, match="weekdays"):
        step_due(ANCHOR, after=None, at=None, weekdays=frozenset())


MONDAY_NOON = china(2026, 11, 23, 12, 0)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 10 * * 5", china(2026, 11, 27, 10, 0)),  # standard cron: 5 = Friday
        ("0 10 * * 0", china(2026, 11, 29, 10, 0)),  # 0 = Sunday
        ("0 10 * * 7", china(2026, 11, 29, 10, 0)),  # 7 = Sunday too
        ("0 10 * * 1", china(2026, 11, 30, 10, 0)),  # 1 = Monday (today's 10:00 has passed)
        ("0 10 * * fri", china(2026, 11, 27, 10, 0)),
        ("0 9 * * 2-4", china(2026, 11, 24, 9, 0)),
        ("0 9 * * 5-7", china(2026, 11, 27, 9, 0)),
        ("0 9 * * 6,0", china(2026, 11, 28, 9, 0)),
        ("30 12 * * *", china(2026, 11, 23, 12, 30)),
        ("0 8 1 * *", china(2026, 12, 1, 8, 0)),
    ],
)
def test_next_cron_fire_uses_standard_weekdays(expr: str, expected: datetime) -> None:
    fire = next_cron_fire(expr, MONDAY_NOON)
    assert fire == expected
    assert fire is not None and fire.tzinfo == UTC


def test_next_cron_fire_is_strictly_after() -> None:
    fire = next_cron_fire("0 12 * * *", MONDAY_NOON)
    assert fire == china(2026, 11, 24, 12, 0)
    assert next_cron_fire("0 12 * * *", MONDAY_NOON - timedelta(microseconds=1)) == MONDAY_NOON


def test_weekday_steps_follow_standard_cron() -> None:
    # */2 in standard cron = Sunday, Tuesday, Thursday, Saturday
    week = cron_fires_between("0 10 * * */2", china(2026, 11, 23), china(2026, 11, 30))
    assert [f.astimezone(CHINA_TZ).isoweekday() for f in week] == [2, 4, 6, 7]


def test_cron_fires_between_is_half_open_and_bounded() -> None:
    start, end = china(2026, 11, 23, 10, 0), china(2026, 11, 23, 12, 0)
    fires = cron_fires_between("*/30 * * * *", start, end)
    assert fires == [start + timedelta(minutes=30 * i) for i in range(4)]
    assert all(f.tzinfo == UTC for f in fires)
    assert len(cron_fires_between("* * * * *", start, end, limit=5)) == 5


def test_cron_fires_between_month_end_friday_pushes() -> None:
    fires = cron_fires_between("0 19 * * 5", china(2027, 1, 1), china(2027, 2, 1))
    assert [f.astimezone(CHINA_TZ).day for f in fires] == [1, 8, 15, 22, 29]


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("0 10 * *", "5 个字段"),
        ("0 25 * * *", "时字段"),
        ("61 10 * * *", "分字段"),
        ("0 10 32 * *", "日字段"),
        ("0 10 * 13 *", "月字段"),
        ("0 10 * * 8", "星期数字 8"),
        ("0 10 * * 5-1", "星期范围无效"),
        ("0 10 * * funday", "星期"),
        ("0 10 * * 1#2", "星期字段无效"),
    ],
)
def test_validate_cron_reports_in_chinese(expr: str, fragment: str) -> None:
    problem = validate_cron(expr)
    assert problem is not None
    assert problem.startswith("cron 表达式无效")
    assert fragment in problem


@pytest.mark.parametrize("expr", ["0 10 * * 5", "*/15 9-18 * * mon-fri", "0 0 1 1 *", "0 19 * * 0,6"])
def test_validate_cron_accepts(expr: str) -> None:
    assert validate_cron(expr) is None
