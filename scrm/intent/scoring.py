"""The lead score (线索浓度): recency-decayed signal weights, a frequency bonus, a level, and the reasons.

Pure arithmetic, no I/O. Every signal (a classified message, a click, a form, a group join, a reply to a push)
is worth its ``weight`` in points when fresh and half as much every ``half_life_days``::

    points(signal) = weight × 0.5 ** (age_days / half_life_days)        age = max(0, now − at)

Negative weights (lost-lead signals, complaints) decay the same way and pull the score down. On top of the sum
comes a **frequency bonus**: a customer who comes back on several days is warmer than one who sent many
messages in one sitting, so each distinct China-time day with a positive signal inside the last
``half_life_days`` (at least one day), beyond the first, adds ``FREQUENCY_BONUS_PER_DAY`` points, at most
``FREQUENCY_BONUS_MAX``. The score is the total rounded and clamped to 0..100; the level is the first of H, A,
B whose threshold the score reaches, else C. Signals in the future of ``now`` count as fresh (clock skew
between sources), signals older than ``HORIZON_HALF_LIVES`` half-lives are worth nothing (they are below
0.1 % of their weight and need not be read).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")
SCORE_MIN, SCORE_MAX = 0, 100
FREQUENCY_BONUS_PER_DAY = 3.0
FREQUENCY_BONUS_MAX = 12.0
HORIZON_HALF_LIVES = 10
LEVEL_ORDER = ("H", "A", "B", "C")  # hottest first
FREQUENCY = "frequency"  # ref, rule and code of the frequency bonus among the reasons
TOP_REASONS = 5


@dataclass(frozen=True)
class ScoreRules:
    """The scoring settings of intent.yaml reduced to what the arithmetic needs."""

    half_life_days: float
    thresholds: Mapping[str, float]  # {"H": 80, "A": 60, "B": 35}: minimum score per level; below B is C

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be positive, got {self.half_life_days}")

    @property
    def horizon(self) -> timedelta:
        """How far back signals can still count."""
        return timedelta(days=self.half_life_days * HORIZON_HALF_LIVES)


@dataclass(frozen=True)
class Signal:
    """One scored fact about a contact (an IntentSignal row, or one about to be written)."""

    ref: str
    code: str
    rule: str
    weight: float
    at: datetime
    kind: str = "message"


@dataclass(frozen=True)
class Reason:
    """Why the score is what it is: one signal (or the frequency bonus) and its points after decay."""

    ref: str
    rule: str
    code: str
    points: float

    def as_json(self) -> dict[str, str | float]:
        return {"ref": self.ref, "rule": self.rule, "code": self.code, "points": self.points}


@dataclass(frozen=True)
class LeadScore:
    score: int
    level: str
    total: float  # the unclamped sum of points (bonus included)
    reasons: tuple[Reason, ...]  # the top contributions, largest absolute points first


def decay_factor(age: timedelta, half_life_days: float) -> float:
    """0.5 ** (age / half-life); ages below zero count as zero."""
    days = max(0.0, age.total_seconds() / 86_400)
    return math.pow(0.5, days / half_life_days)


def decayed_points(signal: Signal, now: datetime, half_life_days: float) -> float:
    return signal.weight * decay_factor(now - signal.at, half_life_days)


def frequency_bonus(signals: Iterable[Signal], now: datetime, rules: ScoreRules) -> float:
    """FREQUENCY_BONUS_PER_DAY per distinct China-time day with a positive signal in the recent window, beyond
    the first, capped at FREQUENCY_BONUS_MAX."""
    window = timedelta(days=max(1.0, rules.half_life_days))
    days = {s.at.astimezone(CHINA).date() for s in signals if s.weight > 0 and timedelta(0) <= now - s.at <= window}
    return min(FREQUENCY_BONUS_MAX, FREQUENCY_BONUS_PER_DAY * max(0, len(days) - 1))


def level_for(score: float, thresholds: Mapping[str, float]) -> str:
    """The hottest level whose threshold ``score`` reaches; C below all of them."""
    for level in LEVEL_ORDER[:-1]:
        if level in thresholds and score >= thresholds[level]:
            return level
    return LEVEL_ORDER[-1]


def level_at_least(level: str, floor: str) -> bool:
    """True when ``level`` is ``floor`` or hotter (H > A > B > C)."""
    return LEVEL_ORDER.index(level) <= LEVEL_ORDER.index(floor)


def clamp_score(total: float) -> int:
    return max(SCORE_MIN, min(SCORE_MAX, round(total)))


def score(signals: Iterable[Signal], now: datetime, rules: ScoreRules, *, top: int = TOP_REASONS) -> LeadScore:
    """The contact's score at ``now`` from its signals (see the module docstring), with the top reasons."""
    recent = [s for s in signals if now - s.at <= rules.horizon]
    exact = [(s, decayed_points(s, now, rules.half_life_days)) for s in recent]
    bonus = frequency_bonus(recent, now, rules)
    total = sum(points for _, points in exact) + bonus
    value = clamp_score(total)
    contributions = [Reason(s.ref, s.rule, s.code, round(points, 2)) for s, points in exact]
    if bonus:
        contributions.append(Reason(FREQUENCY, FREQUENCY, FREQUENCY, bonus))
    ranked = sorted((r for r in contributions if r.points), key=lambda r: (-abs(r.points), r.ref, r.code))
    return LeadScore(value, level_for(value, rules.thresholds), total, tuple(ranked[:top]))
