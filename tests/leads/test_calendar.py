"""Opening hours: the grammar, its errors (with the column), and business-minute arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scrm.leads.calendar import HoursError, OpeningHours, effective_hours

CN = ZoneInfo("Asia/Shanghai")
WEEKDAYS = "mon-fri 09:00-18:00"


def cn(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """A China-time instant in November 2026 (2026-11-23 is a Monday)."""
    return datetime(2026, month, day, hour, minute, tzinfo=CN)


# -- grammar ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "open_at", "closed_at"),
    [
        (WEEKDAYS, [cn(23, 9), cn(27, 17, 59)], [cn(23, 8, 59), cn(23, 18), cn(28, 12), cn(29, 12)]),
        ("daily 09:00-18:00", [cn(28, 9), cn(29, 17)], [cn(28, 18), cn(29, 8)]),
        ("每天 09:00-18:00", [cn(28, 9)], [cn(28, 20)]),
        ("mon-fri 09:00-12:00,13:30-18:00", [cn(23, 11, 59), cn(23, 13, 30)], [cn(23, 12), cn(23, 13, 29)]),
        ("fri-mon 10:00-16:00", [cn(27, 10), cn(28, 10), cn(29, 10), cn(23, 10)], [cn(24, 10), cn(26, 10)]),
        ("周一-周五 09:00-18:00；周六、周日 10:00-17:00", [cn(23, 9), cn(28, 10)], [cn(28, 9, 30), cn(29, 17)]),
        ("星期六,星期天 10:00-17:00", [cn(28, 10), cn(29, 16)], [cn(23, 12)]),
        ("Mon,WED 09:00-18:00", [cn(23, 9), cn(25, 9)], [cn(24, 9)]),
        ("fri 18:00-24:00; sat 00:00-02:00", [cn(27, 23, 59), cn(28, 0), cn(28, 1, 59)], [cn(28, 2), cn(27, 17)]),
        ("daily 09:00-18:00; sun closed", [cn(28, 9)], [cn(29, 9)]),
        ("daily 09:00-18:00; 周日休息", [cn(28, 9)], [cn(29, 9)]),
        ("daily 09:00-18:00; sat 10:00-12:00", [cn(28, 11)], [cn(28, 9), cn(28, 13)]),
        ("mon 09:00-12:00,12:00-18:00", [cn(23, 12)], [cn(23, 18)]),
        ("mon 9:00-18:00", [cn(23, 9)], [cn(23, 8)]),
        ("closed 2026-11-25", [cn(24, 3), cn(26, 0)], [cn(25, 0), cn(25, 23, 59)]),
        ("daily 09:00-18:00; closed 2026-11-24,2026-11-26..2026-11-27", [cn(25, 9)], [cn(24, 9), cn(26, 9), cn(27, 9)]),
        ("daily 09:00-18:00; 休息 2026-11-24", [cn(25, 9)], [cn(24, 9)]),
    ],
)
def test_grammar_forms(text: str, open_at: list[datetime], closed_at: list[datetime]) -> None:
    hours = OpeningHours.parse(text)
    assert [hours.is_open(at) for at in open_at] == [True] * len(open_at)
    assert [hours.is_open(at) for at in closed_at] == [False] * len(closed_at)


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("mox-fri 09:00-18:00", 1, "无法识别的星期 “mox”"),
        ("mon-frx 09:00-18:00", 5, "无法识别的星期 “frx”"),
        ("mon-fri 18:00-02:00", 9, "跨过了午夜"),
        ("mon 09:00-25:00", 11, "时间 25:00 无效"),
        ("mon 09:60-18:00", 5, "时间 09:60 无效"),
        ("mon 24:00-18:00", 5, "24:00 只能作为结束时间"),
        ("mon 09:00-09:00", 5, "开始与结束相同"),
        ("mon 9h-18h", 5, "应写成 HH:MM-HH:MM"),
        ("mon-fri", 8, "缺少时间段"),
        ("09:00-18:00", 1, "缺少星期"),
        ("mon 09:00-12:00; tue 09:00-12:00,11:00-13:00", 34, "重叠"),
        ("mon,,tue 09:00-18:00", 5, "空项"),
        ("mon- 09:00-18:00", 1, "不完整"),
        ("mon 09:00-18:00; closed 2026-02-30", 25, "2026-02-30 不存在"),
        ("closed 2026/10/01", 8, "应写成 YYYY-MM-DD"),
        ("closed 2026-10-07..2026-10-03", 8, "结束早于开始"),
        ("closed 2026-10-01,2026-10-03..2026-1-7", 31, "2026-1-7"),
        ("休息", 3, "缺少日期"),
    ],
)
def test_errors_point_at_the_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(HoursError) as caught:
        OpeningHours.parse(text)
    assert caught.value.column == column
    assert fragment in caught.value.message
    assert str(caught.value).endswith(f"（第 {column} 个字符）")


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(HoursError, match="未知的时区"):
        OpeningHours.parse(WEEKDAYS, tz="Mars/Olympus")


def test_later_clause_replaces_earlier_for_the_same_day() -> None:
    hours = OpeningHours.parse("mon 09:00-12:00; mon 14:00-18:00")
    assert not hours.is_open(cn(23, 10))
    assert hours.is_open(cn(23, 15))


def test_empty_string_is_always_open_and_days_not_named_are_closed() -> None:
    assert OpeningHours.parse("").always_open
    assert OpeningHours.parse("  ").is_open(cn(29, 3))
    assert not OpeningHours.parse("closed 2026-10-01").always_open
    assert not OpeningHours.parse("mon 00:00-24:00").is_open(cn(24, 12))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        OpeningHours.parse(WEEKDAYS).is_open(datetime(2026, 11, 23, 10))


def test_any_input_zone_and_other_calendar_zones() -> None:
    hours = OpeningHours.parse(WEEKDAYS)
    assert hours.is_open(datetime(2026, 11, 23, 1, 0, tzinfo=UTC))  # 09:00 in Shanghai
    assert not hours.is_open(datetime(2026, 11, 23, 0, 59, tzinfo=UTC))
    berlin = OpeningHours.parse(WEEKDAYS, tz="Europe/Berlin")
    assert berlin.is_open(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))  # 09:00 CET
    assert berlin.is_open(datetime(2026, 7, 6, 7, 0, tzinfo=UTC))  # 09:00 CEST (DST)
    assert not berlin.is_open(datetime(2026, 7, 6, 6, 59, tzinfo=UTC))


# -- next_open ----------------------------------------------------------------------------------------


def test_next_open() -> None:
    hours = OpeningHours.parse(WEEKDAYS + "; closed 2026-11-30")
    inside = cn(23, 10)
    assert hours.next_open(inside) is inside
    assert hours.next_open(cn(23, 7)) == cn(23, 9)
    assert hours.next_open(cn(23, 18)) == cn(24, 9)
    assert hours.next_open(cn(27, 18)) == datetime(2026, 12, 1, 9, tzinfo=CN)  # weekend, then a closed Monday
    assert hours.next_open(datetime(2026, 11, 23, 0, tzinfo=UTC)) == datetime(2026, 11, 23, 1, tzinfo=UTC)


def test_next_open_is_none_when_it_never_opens() -> None:
    assert OpeningHours.parse("mon closed").next_open(cn(23, 9)) is None
    assert OpeningHours.parse("daily 09:00-18:00; closed 2026-01-01..2030-12-31").next_open(cn(23, 9)) is None


# -- add_open_minutes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "minutes", "expected"),
    [
        (WEEKDAYS, cn(27, 17, 58), 5, cn(30, 9, 3)),  # Friday evening → Monday morning
        (WEEKDAYS, cn(23, 17, 58), 5, cn(24, 9, 3)),  # across a night
        (WEEKDAYS, cn(23, 10), 30, cn(23, 10, 30)),
        (WEEKDAYS, cn(23, 17, 55), 5, cn(23, 18)),  # lands on closing time exactly
        (WEEKDAYS, cn(23, 7), 5, cn(23, 9, 5)),  # before opening: counts from the opening
        (WEEKDAYS, cn(28, 12), 30, cn(30, 9, 30)),  # Saturday start
        (WEEKDAYS, cn(23, 20), 0, cn(24, 9)),
        (WEEKDAYS, cn(23, 9), 540 * 5 + 1, cn(30, 9, 1)),  # a full week of open time
        (WEEKDAYS + "; closed 2026-11-24..2026-11-25", cn(23, 17, 50), 20, cn(26, 9, 10)),  # holidays
        ("mon-fri 09:00-12:00,13:30-18:00", cn(23, 11, 50), 20, cn(23, 13, 40)),  # lunch break
        ("fri 18:00-24:00; sat 00:00-02:00", cn(27, 23, 50), 20, cn(28, 0, 10)),  # spans that join at midnight
        ("", cn(23, 23), 90, cn(24, 0, 30)),  # always open
        (WEEKDAYS, cn(23, 10), 0.5, cn(23, 10) + timedelta(seconds=30)),
    ],
)
def test_add_open_minutes(text: str, start: datetime, minutes: float, expected: datetime) -> None:
    assert OpeningHours.parse(text).add_open_minutes(start, minutes) == expected


def test_add_open_minutes_is_exact_after_many_steps() -> None:
    hours = OpeningHours.parse(WEEKDAYS)
    moment = cn(23, 9)
    for _ in range(540):  # one open day, a minute at a time
        moment = hours.add_open_minutes(moment, 1)
    assert moment == cn(23, 18)
    assert hours.add_open_minutes(moment, 1) == cn(24, 9, 1)


def test_add_open_minutes_keeps_the_zone_of_its_argument() -> None:
    result = OpeningHours.parse(WEEKDAYS).add_open_minutes(datetime(2026, 11, 23, 9, 58, tzinfo=UTC), 5)
    assert result.tzinfo is UTC
    assert result == datetime(2026, 11, 24, 1, 3, tzinfo=UTC)


def test_add_open_minutes_across_a_dst_change() -> None:
    berlin = OpeningHours.parse("daily 01:00-04:00", tz="Europe/Berlin")
    # 2026-03-29: clocks jump from 02:00 to 03:00, so that day has only two open hours
    start = datetime(2026, 3, 29, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert berlin.open_minutes_between(start, start + timedelta(days=1)) == 120
    assert berlin.add_open_minutes(start, 150) == datetime(2026, 3, 30, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))


def test_add_open_minutes_gives_up_on_a_calendar_closed_for_years() -> None:
    hours = OpeningHours.parse("daily 09:00-18:00; closed 2026-01-01..2029-12-31")
    with pytest.raises(HoursError, match="400 天内"):
        hours.add_open_minutes(cn(23, 9), 5)
    with pytest.raises(HoursError):
        OpeningHours.parse("mon closed").add_open_minutes(cn(23, 9), 1)
    with pytest.raises(ValueError, match="negative"):
        hours.add_open_minutes(cn(23, 9), -1)


# -- open_minutes_between ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "a", "b", "minutes"),
    [
        (WEEKDAYS, cn(23, 8), cn(23, 10), 60),
        (WEEKDAYS, cn(23, 17), cn(24, 10), 120),
        (WEEKDAYS, cn(27, 17), cn(30, 9, 30), 90),
        (WEEKDAYS, cn(28, 0), cn(29, 23), 0),
        (WEEKDAYS, cn(23, 9), cn(30, 9), 5 * 540),
        (WEEKDAYS + "; closed 2026-11-24", cn(23, 9), cn(26, 9), 2 * 540),
        ("mon-fri 09:00-12:00,13:30-18:00", cn(23, 11), cn(23, 14), 90),
        ("", cn(23, 11), cn(23, 14), 180),
        (WEEKDAYS, cn(23, 10), cn(23, 9), -60),
    ],
)
def test_open_minutes_between(text: str, a: datetime, b: datetime, minutes: float) -> None:
    assert OpeningHours.parse(text).open_minutes_between(a, b) == minutes


def test_add_then_measure_round_trips() -> None:
    hours = OpeningHours.parse("mon-fri 09:00-12:00,13:30-18:00; sat 10:00-15:00; closed 2026-11-26")
    start = cn(23, 16, 41)
    for minutes in (1, 77, 600, 2000):
        assert hours.open_minutes_between(start, hours.add_open_minutes(start, minutes)) == minutes


# -- describe and effective_hours ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("mon-fri 09:00-18:00; sat,sun 10:00-17:00", "周一至周五 09:00-18:00；周六、周日 10:00-17:00"),
        ("daily 09:00-18:00", "每天 09:00-18:00"),
        ("mon,wed,fri 09:00-12:00,13:30-18:00", "周一、周三、周五 09:00-12:00，13:30-18:00"),
        ("fri-mon 10:00-16:00", "周一、周五至周日 10:00-16:00"),
        ("", "全天营业"),
        ("mon closed", "不营业"),
        (
            "daily 09:00-18:00; closed 2026-10-01..2026-10-07,2026-12-31",
            "每天 09:00-18:00；休息日：2026-10-01至2026-10-07、2026-12-31",
        ),
    ],
)
def test_describe(text: str, description: str) -> None:
    assert OpeningHours.parse(text).describe() == description


def test_effective_hours_prefers_duty_hours() -> None:
    dealer = "mon-fri 09:00-18:00"
    assert effective_hours(dealer, "sat 10:00-12:00", "Asia/Shanghai").is_open(cn(28, 11))
    assert not effective_hours(dealer, "sat 10:00-12:00", "Asia/Shanghai").is_open(cn(23, 11))
    assert effective_hours(dealer, "  ", "Asia/Shanghai").is_open(cn(23, 11))
    with pytest.raises(HoursError):
        effective_hours(dealer, "sat 10:00", "Asia/Shanghai")
