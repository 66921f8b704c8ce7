"""The contact policy: quiet hours, windows, quotas, caps, priority, decide() and policy.yaml errors."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from scrm.contact_policy import Decision, Policy, PolicyError, decide, load_policy
from scrm.timing import CHINA_TZ

REPO = Path(__file__).resolve().parents[2]


def china(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ)


def policy(**overrides: Any) -> Policy:
    return Policy.model_validate(overrides)


DEFAULT = Policy()
LUNCH = policy(quiet_hours={"start": "12:00", "end": "13:00"})


def test_shipped_policy_file_is_the_defaults() -> None:
    assert load_policy(REPO / "sop_templates" / "policy.yaml") == DEFAULT


def test_missing_and_empty_files_give_defaults(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.yaml") == DEFAULT
    empty = tmp_path / "policy.yaml"
    empty.write_text("# nothing set\n", encoding="utf-8")
    assert load_policy(empty) == DEFAULT


@pytest.mark.parametrize(
    ("wall", "quiet"),
    [
        (time(20, 59), False),
        (time(21, 0), True),  # the start is quiet
        (time(23, 59), True),
        (time(0, 0), True),
        (time(8, 59), True),
        (time(9, 0), False),  # the end is allowed
        (time(12, 0), False),
    ],
)
def test_quiet_hours_across_midnight(wall: time, quiet: bool) -> None:
    at = datetime.combine(datetime(2026, 2, 28).date(), wall, tzinfo=CHINA_TZ)
    assert DEFAULT.in_quiet_hours(at) is quiet
    assert DEFAULT.in_quiet_hours(at.astimezone(UTC)) is quiet  # same instant given in UTC


@pytest.mark.parametrize(
    ("wall", "quiet"), [(time(11, 59), False), (time(12, 0), True), (time(12, 59), True), (time(13, 0), False)]
)
def test_quiet_hours_within_a_day(wall: time, quiet: bool) -> None:
    assert LUNCH.in_quiet_hours(datetime.combine(datetime(2026, 3, 1).date(), wall, tzinfo=CHINA_TZ)) is quiet


def test_equal_start_and_end_means_no_quiet_hours() -> None:
    always = policy(quiet_hours={"start": "09:00", "end": "09:00"})
    assert not any(always.in_quiet_hours(china(2026, 3, 1, h)) for h in range(24))


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (china(2026, 11, 23, 15, 0), china(2026, 11, 23, 15, 0)),  # allowed: the same instant
        (china(2026, 11, 23, 21, 0), china(2026, 11, 24, 9, 0)),
        (china(2026, 11, 24, 3, 0), china(2026, 11, 24, 9, 0)),  # after midnight: the same day
        (china(2026, 2, 28, 22, 0), china(2026, 3, 1, 9, 0)),  # month end
        (china(2028, 2, 28, 22, 0), china(2028, 2, 29, 9, 0)),  # leap year
        (china(2026, 12, 31, 23, 30), china(2027, 1, 1, 9, 0)),  # year end
    ],
)
def test_next_allowed(at: datetime, expected: datetime) -> None:
    allowed = DEFAULT.next_allowed(at)
    assert allowed == expected
    assert allowed.tzinfo == UTC


def test_next_allowed_for_a_window_inside_the_day() -> None:
    assert LUNCH.next_allowed(china(2026, 3, 1, 12, 30)) == china(2026, 3, 1, 13, 0)
    assert LUNCH.next_allowed(china(2026, 3, 1, 23, 0)) == china(2026, 3, 1, 23, 0)


def test_quiet_for_exempt_kinds() -> None:
    assert not DEFAULT.quiet_for("welcome")
    assert not DEFAULT.quiet_for("tags")
    assert DEFAULT.quiet_for("private_message")
    assert DEFAULT.quiet_for("group_message")


def test_day_and_week_windows_are_local_calendar() -> None:
    at = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)  # Monday 30 Nov 01:00 in Shanghai
    assert DEFAULT.day_window(at) == (china(2026, 11, 30), china(2026, 12, 1))
    assert DEFAULT.week_window(at) == (china(2026, 11, 30), china(2026, 12, 7))
    sunday = china(2026, 11, 29, 23, 59)
    assert DEFAULT.week_window(sunday) == (china(2026, 11, 23), china(2026, 11, 30))
    assert all(edge.tzinfo == UTC for edge in DEFAULT.day_window(at) + DEFAULT.week_window(at))


def test_windows_across_year_end() -> None:
    at = china(2026, 12, 31, 23, 0)
    assert DEFAULT.day_window(at) == (china(2026, 12, 31), china(2027, 1, 1))
    assert DEFAULT.week_window(at) == (china(2026, 12, 28), china(2027, 1, 4))


@pytest.mark.parametrize(
    ("mode", "at", "window", "limit"),
    [
        ("days_in_month", china(2027, 2, 14), (china(2027, 2, 1), china(2027, 3, 1)), 28),
        ("days_in_month", china(2028, 2, 29, 23), (china(2028, 2, 1), china(2028, 3, 1)), 29),
        ("days_in_month", china(2026, 12, 31, 23), (china(2026, 12, 1), china(2027, 1, 1)), 31),
        ("days_in_month", china(2026, 4, 30), (china(2026, 4, 1), china(2026, 5, 1)), 30),
        ("4_per_month", china(2026, 12, 5), (china(2026, 12, 1), china(2027, 1, 1)), 4),
        ("7_per_week", china(2027, 1, 1), (china(2026, 12, 28), china(2027, 1, 4)), 7),
        ("1_per_day", china(2028, 2, 29, 8), (china(2028, 2, 29), china(2028, 3, 1)), 1),
    ],
)
def test_quota_modes(mode: str, at: datetime, window: tuple[datetime, datetime], limit: int) -> None:
    quota = policy(group_send_quota={"mode": mode})
    assert quota.quota_window(at) == window
    assert quota.quota_limit(at) == limit


def test_quota_month_is_local_not_utc() -> None:
    # 31 Jan 17:00 UTC is already 1 Feb in Shanghai: February's window and 28 days
    at = datetime(2027, 1, 31, 17, 0, tzinfo=UTC)
    assert DEFAULT.quota_window(at) == (china(2027, 2, 1), china(2027, 3, 1))
    assert DEFAULT.quota_limit(at) == 28


def test_priority_ranking() -> None:
    ranks = {source: DEFAULT.rank(source) for source in ("welcome", "lead", "sop", "campaign")}
    assert sorted(ranks, key=ranks.__getitem__) == ["welcome", "lead", "sop", "campaign"]
    assert DEFAULT.rank("unknown") > ranks["campaign"]
    reordered = policy(priority=["campaign", "sop"])
    assert reordered.rank("campaign") < reordered.rank("sop") < reordered.rank("lead") == reordered.rank("welcome")


NOON = china(2026, 11, 25, 12, 0)  # a Wednesday


def ask(policy_: Policy = DEFAULT, **overrides: Any) -> Decision:
    values: dict[str, Any] = {
        "kind": "private_message",
        "at": NOON,
        "due_since": NOON,
        "touches_today": 0,
        "touches_week": 0,
        "quota_used": 0,
    }
    values.update(overrides)
    return decide(policy_, **values)


def test_send_when_nothing_binds() -> None:
    assert ask() == Decision("send", None, "ok")


def test_quiet_hours_wait_until_the_window_ends() -> None:
    late = china(2026, 11, 25, 22, 0)
    assert ask(at=late, due_since=late) == Decision("wait", china(2026, 11, 26, 9, 0), "quiet_hours")


def test_exempt_kinds_ignore_quiet_hours() -> None:
    late = china(2026, 11, 25, 22, 0)
    assert ask(kind="welcome", at=late, due_since=late).verdict == "send"
    assert ask(kind="tags", at=late, due_since=late).verdict == "send"


def test_day_cap_defers_to_the_next_allowed_minute_of_tomorrow() -> None:
    assert ask(touches_today=2, touches_week=2) == Decision("wait", china(2026, 11, 26, 9, 0), "cap_day")


def test_week_cap_defers_to_next_monday() -> None:
    assert ask(touches_today=1, touches_week=5) == Decision("wait", china(2026, 11, 30, 9, 0), "cap_week")
    # both caps reached: the week is the one that binds
    assert ask(touches_today=2, touches_week=5).reason == "cap_week"


def test_caps_only_count_for_capped_kinds() -> None:
    for kind in ("welcome", "tags", "notify_staff", "start_sop", "end", "group_message"):
        assert ask(kind=kind, touches_today=9, touches_week=9, quota_used=None).verdict == "send", kind
    assert ask(kind="advisor_task", touches_today=2, quota_used=None).reason == "cap_day"


def test_zero_caps_mean_unlimited() -> None:
    unlimited = policy(caps={"per_day": 0, "per_week": 0})
    assert ask(unlimited, touches_today=50, touches_week=300).verdict == "send"


def test_quota_waits_for_the_next_window() -> None:
    assert ask(quota_used=30) == Decision("wait", china(2026, 12, 1, 9, 0), "quota")
    assert ask(quota_used=29).verdict == "send"  # November has 30 days
    assert ask(kind="group_message", quota_used=30).reason == "quota"
    assert ask(kind="advisor_task", quota_used=30).verdict == "send"  # app messages use no group-send quota
    assert ask(quota_used=None).verdict == "send"  # not counted by the caller


def test_quota_per_day_mode() -> None:
    daily = policy(group_send_quota={"mode": "1_per_day"})
    assert ask(daily, kind="group_message", quota_used=1) == Decision("wait", china(2026, 11, 26, 9, 0), "quota")


def test_skip_mode() -> None:
    skipping = policy(on_limit="skip")
    assert ask(skipping, touches_today=2) == Decision("skip", None, "cap_day")
    assert ask(skipping, touches_week=5) == Decision("skip", None, "cap_week")
    assert ask(skipping, quota_used=30) == Decision("skip", None, "quota")
    late = china(2026, 11, 25, 23, 0)
    assert ask(skipping, at=late, due_since=late).verdict == "wait"  # quiet hours always wait


def test_defer_expires_after_max_defer_days() -> None:
    long_ago = NOON - timedelta(days=7)
    assert ask(due_since=long_ago, touches_today=2) == Decision("skip", None, "defer_expired")
    assert ask(due_since=long_ago + timedelta(days=1), touches_today=2).verdict == "wait"
    no_waiting = policy(max_defer_days=0)
    late = china(2026, 11, 25, 22, 0)
    assert ask(no_waiting, at=late, due_since=late) == Decision("skip", None, "defer_expired")


def test_decide_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ask(at=datetime(2026, 11, 25, 12, 0))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("caps:\n  per_dya: 3\n", 2, 3, "未知的键：caps.per_dya，是不是 per_day？"),
        ("quite_hours: {start: '21:00', end: '09:00'}\n", 1, 1, "是不是 quiet_hours？"),
        ("quiet_hours: {start: '25:00', end: '09:00'}\n", 1, 22, "quiet_hours.start"),
        ("quiet_hours:\n  start: '21:00'\n  end: 9am\n", 3, 8, "时间格式无效"),
        ("caps:\n  per_day: 6\n  per_week: 5\n", 3, 13, "per_day（6）不能大于 per_week（5）"),
        ("caps:\n  per_day: -1\n", 2, 12, "不能小于 0"),
        ("caps:\n  per_day: '2'\n", 2, 12, "应为整数"),
        ("caps:\n  per_day: 1.5\n", 2, 12, "应为整数"),
        ("group_send_quota:\n  mode: 5_per_day\n", 2, 9, "'days_in_month', '4_per_month'"),
        ("on_limit: later\n", 1, 11, "on_limit 的值无效"),
        ("quiet_hours_exempt: [welcome, welcom]\n", 1, 31, "未知的动作类型：welcom，是不是 welcome？"),
        ("priority: [welcome, lead, sop, campain]\n", 1, 32, "是不是 campaign？"),
        ("priority: [sop, sop]\n", 1, 11, "重复"),
        ("timezone: Mars/Olympus\n", 1, 11, "未知的时区"),
        ("caps: 3\n", 1, 7, "应是键值映射"),
        ("- 1\n- 2\n", 1, 1, "顶层应是键值映射"),
        ("on_limit: [defer\n", 2, 1, "YAML 语法错误"),
        ("caps:\n  per_day: 2\n   per_week: 5\n", 3, 12, "YAML 语法错误"),
    ],
)
def test_load_policy_errors(tmp_path: Path, text: str, line: int, col: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    error = caught.value
    assert (error.line, error.col) == (line, col)
    assert fragment in error.message_cn
    assert str(error).startswith(f"{path}:{line}:{col} ")


def test_unquoted_clock_times_are_read_as_written(tmp_path: Path) -> None:
    # YAML 1.1 turns an unquoted 21:00 into the integer 1260; the policy still means 21:00
    loaded = load_policy(write(tmp_path, "quiet_hours: {start: 22:30, end: 08:00}\n"))
    assert (loaded.quiet_hours.start, loaded.quiet_hours.end) == (time(22, 30), time(8, 0))


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, "caps:\n  per_day: 1\non_limit: skip\n"))
    assert loaded.caps.per_day == 1
    assert loaded.caps.per_week == 5
    assert loaded.on_limit == "skip"
    assert loaded.quiet_hours == DEFAULT.quiet_hours
