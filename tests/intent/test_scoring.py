"""The lead score arithmetic: decay, negatives, clamping, frequency bonus, levels and reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scrm.intent.scoring import (
    FREQUENCY,
    FREQUENCY_BONUS_MAX,
    FREQUENCY_BONUS_PER_DAY,
    ScoreRules,
    Signal,
    decay_factor,
    decayed_points,
    level_at_least,
    level_for,
    score,
)

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 China time
RULES = ScoreRules(half_life_days=14, thresholds={"H": 80, "A": 60, "B": 35})


def signal(weight: float, age: timedelta, code: str = "price", ref: str = "msg:kf:1") -> Signal:
    return Signal(ref=ref, code=code, rule=f"keyword:{code}", weight=weight, at=NOW - age)


def test_points_halve_every_half_life() -> None:
    assert decayed_points(signal(40, timedelta(0)), NOW, 14) == 40
    assert decayed_points(signal(40, timedelta(days=14)), NOW, 14) == pytest.approx(20)
    assert decayed_points(signal(40, timedelta(days=28)), NOW, 14) == pytest.approx(10)
    assert decayed_points(signal(40, timedelta(days=3.5)), NOW, 14) == pytest.approx(40 * 2**-0.25)
    assert decay_factor(timedelta(hours=-5), 14) == 1.0  # a signal from the future counts as fresh


def test_negative_signals_decay_and_pull_the_score_down() -> None:
    positive = signal(60, timedelta(0), ref="msg:kf:1")
    lost = signal(-40, timedelta(days=7), code="lost", ref="msg:kf:2")
    result = score([positive, lost], NOW, RULES)
    assert result.total == pytest.approx(60 - 40 * 2**-0.5)
    assert result.score == round(60 - 40 * 2**-0.5) == 32
    assert result.level == "C"


def test_score_is_clamped_to_0_100() -> None:
    assert score([signal(-40, timedelta(0), code="lost")], NOW, RULES).score == 0
    many = [signal(40, timedelta(0), ref=f"msg:kf:{i}") for i in range(5)]
    result = score(many, NOW, RULES)
    assert result.total == 200 and (result.score, result.level) == (100, "H")


def test_levels_follow_the_thresholds() -> None:
    thresholds = {"H": 80, "A": 60, "B": 35}
    assert [level_for(s, thresholds) for s in (100, 80, 79, 60, 59, 35, 34, 0)] == list("HHAABBCC")
    assert level_for(50, {"H": 90, "A": 70, "B": 50}) == "B"
    assert level_at_least("H", "A") and level_at_least("A", "A") and not level_at_least("B", "A")


def test_frequency_bonus_counts_distinct_days_in_the_window() -> None:
    same_day = [signal(5, timedelta(hours=h), ref=f"msg:kf:{h}") for h in range(3)]
    assert score(same_day, NOW, RULES).total == pytest.approx(sum(decayed_points(s, NOW, 14) for s in same_day))
    three_days = [signal(5, timedelta(days=d), ref=f"msg:kf:{d}") for d in range(3)]
    decayed = sum(decayed_points(s, NOW, 14) for s in three_days)
    result = score(three_days, NOW, RULES)
    assert result.total == pytest.approx(decayed + 2 * FREQUENCY_BONUS_PER_DAY)
    assert any(r.code == FREQUENCY and r.points == 2 * FREQUENCY_BONUS_PER_DAY for r in result.reasons)
    ten_days = [signal(1, timedelta(days=d), ref=f"msg:kf:{d}") for d in range(10)]
    decayed = sum(decayed_points(s, NOW, 14) for s in ten_days)
    assert score(ten_days, NOW, RULES).total == pytest.approx(decayed + FREQUENCY_BONUS_MAX)
    old_days = [signal(5, timedelta(days=20 + d), ref=f"msg:kf:{d}") for d in range(3)]  # outside the window
    negative_days = [signal(-5, timedelta(days=d), code="complaint", ref=f"c:{d}") for d in range(3)]
    for signals in (old_days, negative_days):
        assert score(signals, NOW, RULES).total == pytest.approx(sum(decayed_points(s, NOW, 14) for s in signals))


def test_signals_beyond_the_horizon_are_ignored() -> None:
    ancient = signal(40, RULES.horizon + timedelta(days=1))
    assert score([ancient], NOW, RULES).reasons == ()
    assert score([ancient], NOW, RULES).total == 0


def test_reasons_are_the_top_contributions_after_decay() -> None:
    signals = [
        signal(18, timedelta(days=14), code="test_drive", ref="msg:kf:a"),
        signal(12, timedelta(0), code="price", ref="msg:kf:b"),
        signal(-40, timedelta(days=28), code="lost", ref="msg:kf:c"),
        signal(0.001, timedelta(0), code="config", ref="msg:kf:d"),
    ]
    result = score(signals, NOW, RULES, top=3)
    assert [(r.ref, r.code, r.rule, r.points) for r in result.reasons] == [
        ("msg:kf:b", "price", "keyword:price", 12.0),
        ("msg:kf:c", "lost", "keyword:lost", -10.0),
        ("msg:kf:a", "test_drive", "keyword:test_drive", 9.0),
    ]
    assert result.reasons[0].as_json() == {"ref": "msg:kf:b", "rule": "keyword:price", "code": "price", "points": 12.0}


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ScoreRules(half_life_days=0, thresholds={})
