"""What the intent classifier says about one message (:mod:`scrm.intent.classifier` decides it): the intents
found, the primary one, a 0..100 strength, and the hits that explain it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OTHER = "other"


@dataclass(frozen=True, slots=True)
class Hit:
    code: str
    rule: str  # "keyword:多少钱", "phrase:能不能…试驾", "pattern:<name or regex>"
    weight: float  # effective weight, after negation / hedging
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Classification:
    intents: list[str]  # codes, strongest first; ["other"] when nothing fired
    primary: str
    score: int  # 0..100, this message's intent strength
    hits: list[Hit] = field(default_factory=list)
    negated: bool = False
    hedged: bool = False
    lost: bool = False
    hints: dict[str, list[str]] = field(default_factory=dict)  # models, budget, timeframe (non-empty only)

    def as_json(self) -> dict[str, Any]:
        """The fields ``lianyi intent classify`` adds to each line."""
        return {"intents": list(self.intents), "primary": self.primary, "score": self.score}


EMPTY = Classification(intents=[OTHER], primary=OTHER, score=0)
