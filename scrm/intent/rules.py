"""The schema of ``intent.yaml`` (intent rules, scoring and tag settings) and :func:`load_rules`.

The file lives in the SOP folder and is edited by operators; ``lianyi sop check`` validates it (code SOP027).
Sections (every one optional; defaults below):

- ``settings``: matching limits and the score formula's constants (:class:`MatchSettings`).
- ``modifiers``: negation and hedging cues with their scope (:class:`Modifiers`).
- ``intents``: per intent code, weighted ``keywords``, gapped ``phrases`` (``能不能…试驾``) and regex
  ``patterns`` (:class:`IntentRuleSet`). ``lost`` has its own top-level section (lost-lead signals, not
  negatable by default); ``other`` has no rules: it is what is left when nothing fires.
- ``hints``: extracted facts (car models, budget, time frame), terms and patterns (:class:`HintRules`).
- ``model``: the optional statistical model that fills in when the rules are not decisive
  (:class:`ModelSettings`; :mod:`scrm.intent.model`, combination in :mod:`scrm.intent.classifier`).
- ``scoring`` and ``tags``: read by :mod:`scrm.intent.scoring` and :mod:`scrm.intent.tags`.

:func:`load_rules` raises :class:`IntentRulesError` with every problem at its ``file:line:col``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from scrm.config_file import ConfigFileError, RuleFile, RuleProblem, load_config

__all__ = [
    "INTENT_CODES",
    "INTENT_FILE",
    "PURCHASE_CODES",
    "HintRules",
    "IntentRuleSet",
    "IntentRules",
    "IntentRulesError",
    "LostRuleSet",
    "MatchSettings",
    "ModelSettings",
    "Modifiers",
    "PatternRule",
    "RuleProblem",
    "ScoringSettings",
    "TagSettings",
    "load_rules",
]

INTENT_FILE = "intent.yaml"
# fixed by DESIGN.md; the order is also the default tie-break priority
INTENT_CODES: tuple[str, ...] = (
    "price",
    "finance",
    "test_drive",
    "trade_in",
    "delivery",
    "config",
    "purchase",
    "after_sales",
    "complaint",
    "lost",
    "other",
)
PURCHASE_CODES: frozenset[str] = frozenset({"price", "finance", "test_drive", "trade_in", "delivery", "config"})
RULED_CODES = tuple(code for code in INTENT_CODES if code not in ("lost", "other"))
PHRASE_SEPARATOR = re.compile(r"\.\.\.|…|\*")  # 能不能…试驾 (NFKC turns … into ...)

_V = TypeVar("_V")
Weight = Annotated[float, Field(gt=0, le=100)]
Chars = Annotated[int, Field(ge=0, le=100)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _non_blank(terms: Mapping[str, float] | list[str], what: str) -> None:
    for term in terms:
        if not str(term).strip():
            raise PydanticCustomError("blank_term", f"{what}不能为空字符串", {"key": str(term)})


class PatternRule(_Frozen):
    """A regular expression (matched on the normalised text). ``anchor``: literals of which at least one
    must occur for the regex to run at all — keeps the per-message cost at one automaton pass."""

    regex: str
    weight: Weight = 3.0
    anchor: list[str] = Field(default_factory=list)
    name: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise PydanticCustomError("bad_regex", f"正则表达式无效：{exc}") from None
        return value

    @field_validator("anchor", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def label(self) -> str:
        return self.name or self.regex


class IntentRuleSet(_Frozen):
    """What makes one intent fire: ``keywords`` {词: 权重}, ``phrases`` {"片段…片段": 权重} whose parts
    appear in order with at most ``settings.phrase_gap`` characters between them, ``patterns``."""

    keywords: dict[str, Weight] = Field(default_factory=dict)
    phrases: dict[str, Weight] = Field(default_factory=dict)
    patterns: list[PatternRule] = Field(default_factory=list)
    negatable: bool = True  # negation and hedging cues apply to this intent's hits

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: dict[str, float]) -> dict[str, float]:
        _non_blank(value, "关键词")
        return value

    @field_validator("phrases")
    @classmethod
    def _phrases(cls, value: dict[str, float]) -> dict[str, float]:
        _non_blank(value, "短语")
        for phrase in value:
            parts = [p for p in PHRASE_SEPARATOR.split(phrase) if p.strip()]
            if len(parts) < 2:
                message = f"短语 {phrase} 至少要有两段，用 … 分隔，如 能不能…试驾"
                raise PydanticCustomError("bad_phrase", message, {"key": phrase})
        return value


class LostRuleSet(IntentRuleSet):
    """Lost-lead signals (bought elsewhere, too expensive, cancelled): not negatable unless said so."""

    negatable: bool = False


class CueSet(_Frozen):
    """Cue words that change a hit: ``cues`` ending within ``before`` characters before it, ``after_cues``
    starting within ``after`` characters after it (not across clause boundaries); the hit's weight is
    multiplied by ``factor`` (0 cancels), or by ``codes[code]`` for the codes listed there."""

    cues: list[str] = Field(default_factory=list)
    after_cues: list[str] = Field(default_factory=list)
    factor: Annotated[float, Field(ge=0, le=1)] = 0.0
    codes: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)  # per-code factor
    before: Chars = 6
    after: Chars = 4

    @field_validator("codes")
    @classmethod
    def _factor_codes(cls, value: dict[str, float]) -> dict[str, float]:
        return _known_codes(value)


class Modifiers(_Frozen):
    negation: CueSet = CueSet()
    hedging: CueSet = CueSet(factor=0.5)
    # clause ends (written in any width: ，and , both work); cues do not reach across them. Spaces and line
    # breaks are not clause ends (customers use them for pauses: "不急 先帮我算算分期").
    boundaries: str = ",.!?;~。、"


class MatchSettings(_Frozen):
    """score = round(100 × (1 − e^(−S / saturation))) where S is the primary intent's summed weight."""

    max_chars: Annotated[int, Field(ge=1, le=100_000)] = 2000
    saturation: Annotated[float, Field(gt=0)] = 8.0
    min_weight: Annotated[float, Field(ge=0)] = 2.0  # an intent needs S ≥ this to be reported
    phrase_gap: Chars = 8
    priority: list[str] = Field(default_factory=lambda: list(INTENT_CODES[:-1]))  # ties: earlier wins

    @field_validator("priority")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if code not in INTENT_CODES or code == "other":
                raise PydanticCustomError("unknown_intent", f"未知的意向代码：{code}")
        if len(set(value)) != len(value):
            raise PydanticCustomError("duplicate_intent", "priority 中有重复的意向代码")
        return value


class ModelSettings(_Frozen):
    """The optional statistical model (off unless ``enabled``). Rules are decisive when their primary intent
    sums to ≥ ``decisive_weight``; otherwise the model's class is taken when its probability is ≥
    ``threshold``, and counts as a hit of weight ``weight × probability`` (rule name ``model``)."""

    enabled: bool = False
    examples: str = "intent_examples.jsonl"  # JSON lines {"text", "label"}; relative to the SOP folder
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.35
    decisive_weight: Annotated[float, Field(ge=0)] = 4.0
    weight: Weight = 4.0
    regularisation: Annotated[float, Field(gt=0, le=1000)] = 10.0  # LogisticRegression C


class HintKind(_Frozen):
    terms: list[str] = Field(default_factory=list)
    patterns: list[PatternRule] = Field(default_factory=list)


class HintRules(_Frozen):
    """Facts to extract: car models (a configurable line-up), budget, time frame."""

    models: HintKind = HintKind()
    budget: HintKind = HintKind()
    timeframe: HintKind = HintKind()

    def kinds(self) -> dict[str, HintKind]:
        return {"models": self.models, "budget": self.budget, "timeframe": self.timeframe}


class Levels(_Frozen):
    """Lead score thresholds: ≥ H → H, ≥ A → A, ≥ B → B, else C."""

    H: Annotated[int, Field(ge=0, le=100)] = 80
    A: Annotated[int, Field(ge=0, le=100)] = 60
    B: Annotated[int, Field(ge=0, le=100)] = 35

    @model_validator(mode="after")
    def _ordered(self) -> Levels:
        if not self.H > self.A > self.B:
            raise PydanticCustomError("levels_order", "等级阈值必须 H > A > B")
        return self


def _default_behaviours() -> dict[str, float]:
    return {"click": 4.0, "form": 25.0, "test_drive_booking": 40.0, "join_group": 6.0, "reply": 3.0}


def _default_intent_weights() -> dict[str, float]:
    return {
        "price": 12.0,
        "finance": 14.0,
        "test_drive": 18.0,
        "trade_in": 12.0,
        "delivery": 16.0,
        "config": 8.0,
        "purchase": 20.0,
        "after_sales": 2.0,
        "complaint": -5.0,
        "lost": -40.0,
        "other": 0.0,
    }


class ScoringSettings(_Frozen):
    """Lead score settings (consumed by :mod:`scrm.intent.scoring`); weights are points before decay."""

    half_life_days: Annotated[float, Field(gt=0, le=3650)] = 14.0
    levels: Levels = Levels()
    behaviours: dict[str, float] = Field(default_factory=_default_behaviours)
    intent_weights: dict[str, float] = Field(default_factory=_default_intent_weights)
    lost_stage_on: list[str] = Field(default_factory=lambda: ["lost"])

    @field_validator("intent_weights")
    @classmethod
    def _weight_codes(cls, value: dict[str, float]) -> dict[str, float]:
        return {**_default_intent_weights(), **_known_codes(value)}

    @field_validator("lost_stage_on")
    @classmethod
    def _stage_codes(cls, value: list[str]) -> list[str]:
        _known_codes(dict.fromkeys(value, 0.0))
        return value


def _default_intent_tags() -> dict[str, str]:
    return {
        "price": "询价",
        "finance": "金融贷款",
        "test_drive": "试驾",
        "trade_in": "置换",
        "delivery": "提车交付",
        "config": "配置咨询",
        "purchase": "购车意向",
        "after_sales": "售后",
        "complaint": "投诉",
        "lost": "战败信号",
    }


class TagSettings(_Frozen):
    """Corp tag names Lianyi manages (consumed by :mod:`scrm.intent.tags`)."""

    group: str = "意向标签"
    level_group: str = "意向等级"
    stage_group: str = "客户阶段"
    intents: dict[str, str] = Field(default_factory=_default_intent_tags)
    levels: dict[str, str] = Field(default_factory=lambda: {"H": "H", "A": "A", "B": "B", "C": "C"})
    stages: dict[str, str] = Field(
        default_factory=lambda: {"prospect": "潜客", "intent": "意向客户", "owner": "车主", "lost": "战败"}
    )

    @field_validator("intents")
    @classmethod
    def _intent_codes(cls, value: dict[str, str]) -> dict[str, str]:
        return _known_codes(value)


def _known_codes(value: dict[str, _V]) -> dict[str, _V]:
    for code in value:
        if code not in INTENT_CODES:
            message = f"未知的意向代码：{code}，可选：{'、'.join(INTENT_CODES)}"
            raise PydanticCustomError("unknown_intent", message, {"key": code})
    return value


class IntentRules(_Frozen):
    """The whole of ``intent.yaml``. ``IntentRules()`` is a rule-less default (every message is ``other``)."""

    version: Literal[1] = 1
    settings: MatchSettings = MatchSettings()
    modifiers: Modifiers = Modifiers()
    intents: dict[str, IntentRuleSet] = Field(default_factory=dict)
    lost: LostRuleSet = LostRuleSet()
    hints: HintRules = HintRules()
    model: ModelSettings = ModelSettings()
    scoring: ScoringSettings = ScoringSettings()
    tags: TagSettings = TagSettings()

    @field_validator("intents")
    @classmethod
    def _ruled_codes(cls, value: dict[str, IntentRuleSet]) -> dict[str, IntentRuleSet]:
        for code in value:
            if code == "lost":
                message = "战败信号请写在顶层的 lost 段，而不是 intents 下"
                raise PydanticCustomError("lost_section", message, {"key": code})
            if code not in RULED_CODES:
                message = f"未知的意向代码：{code}，可选：{'、'.join(RULED_CODES)}"
                raise PydanticCustomError("unknown_intent", message, {"key": code})
        return value

    def rule_sets(self) -> dict[str, IntentRuleSet]:
        """Every code with rules, ``lost`` included."""
        return {**self.intents, "lost": self.lost}


class IntentRulesError(ConfigFileError):
    """``intent.yaml`` cannot be used; ``problems`` say where and why."""


def load_rules(path: str | Path) -> IntentRules:
    """Read and validate ``intent.yaml``; raises :class:`IntentRulesError` (every problem, with position)."""
    return load_config(path, IntentRules, IntentRulesError)


INTENT_RULE_FILE = RuleFile(INTENT_FILE, "SOP027", load_rules)  # checked by `lianyi sop check`
