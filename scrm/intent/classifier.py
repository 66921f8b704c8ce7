"""The rule classifier: one message in, its intents, strength, explanation and hints out.

How a message is classified (:meth:`Classifier.classify`):

1. The first ``settings.max_chars`` characters are normalised (:func:`scrm.intent.normalize.normalize`);
   an empty result is ``other`` with score 0.
2. ONE Aho-Corasick pass (pyahocorasick, built once per rules object) finds every keyword, every part of
   every gapped phrase, every negation/hedging cue, every regex anchor and every hint term. A keyword hit
   lying strictly inside a longer keyword hit is dropped (``落地`` inside ``落地价`` does not count
   twice; operators override a short word by writing the longer one). A phrase fires when its parts occur
   in order with at most ``settings.phrase_gap`` characters between them; a keyword of the same intent that is
   one of the phrase's matched parts then counts through the phrase only. A regex runs only when one of its
   anchors was found (or always, when it has none); regexes are compiled once.
3. Modifiers: a negatable hit with a negation cue (``cues``) ending at most ``before`` characters before
   it, or an ``after_cues`` cue starting at most ``after`` characters after it, inside the same clause (no
   ``modifiers.boundaries`` character in between; spaces do not end a clause), has its weight multiplied by
   the negation factor (0 = cancelled); likewise for hedging cues (factor 0.5 by default), which also reach
   non-negatable intents such as ``lost``. ``codes`` overrides the factor per intent. Negation wins when both
   apply. A cue inside the hit itself does not count (``不考虑了`` can be a lost keyword).
4. Per intent code, S(code) = Σ over its distinct rules of the rule's effective weight (a rule that fires
   twice counts once, at its strongest). Codes with S ≥ ``settings.min_weight`` are the message's
   ``intents``, strongest first; ties go to the earlier code in ``settings.priority``. ``primary`` is the
   first of them, or ``other`` when there is none.
5. score = round(100 × (1 − e^(−S(primary) / settings.saturation))), 0 for ``other``: a single weight-4
   keyword with saturation 8 gives 39, S = 12 gives 78, S = 24 gives 95.

Optional statistical model (``model.enabled`` in intent.yaml; :mod:`scrm.intent.model`): after step 5,

6. the rules are *decisive* when their primary intent is not ``other`` and S(primary) ≥
   ``model.decisive_weight``; the result is then the rules' alone and the model does not run. Otherwise the
   model predicts (code, probability p) on the same normalised text, and its code becomes the primary
   intent when p ≥ ``model.threshold``, the code is not ``other`` and differs from the rules' primary —
   unless the rules saw that very intent negated (a negated hit is never revived by the model). The model
   counts as a hit ``Hit(code, "model", weight × p)`` over the whole text, multiplied by the hedging factor
   when the rules found hedging (a hedged message stays hedged); the score is the step 5 formula on that
   weight, and the rules' own intents follow the model's in ``intents``. A weak rule result that the model
   does not overrule is returned unchanged, so the model fills ``other`` and weak/ambiguous rule results.

The result types (:class:`Classification`, :class:`Hit`) are in :mod:`scrm.intent.classification`; offsets in a
:class:`Hit` are offsets in the normalised text.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import ahocorasick

from scrm.intent.classification import EMPTY, OTHER, Classification, Hit
from scrm.intent.model import IntentModel, model_for
from scrm.intent.normalize import normalize
from scrm.intent.rules import PHRASE_SEPARATOR, IntentRules, PatternRule, load_rules

__all__ = ["Classification", "Classifier", "Hit", "classifier_from_file"]

log = logging.getLogger(__name__)
_S = TypeVar("_S", bound=tuple[Any, ...])  # (start, end, …)
_Found = tuple[int, int, str, str, float, bool]  # start, end, code, rule, weight, negatable
_Span = tuple[str, int, int]  # code, start, end
_Cue = tuple[int, int, int, int]  # start, end, kind, side

_KEYWORD, _PART, _CUE, _ANCHOR, _HINT = range(5)
_NEGATION, _HEDGING = 0, 1
_BEFORE, _AFTER = 0, 1


@dataclass(frozen=True, slots=True)
class _Phrase:
    code: str
    rule: str
    weight: float
    negatable: bool
    parts: int


@dataclass(frozen=True, slots=True)
class _Pattern:
    code: str  # an intent code, or a hint kind when ``hint`` is set
    rule: str
    weight: float
    negatable: bool
    regex: re.Pattern[str]
    hint: bool


class Classifier:
    """Rules compiled for matching: one automaton, compiled regexes. Thread-safe and reusable."""

    def __init__(self, rules: IntentRules, model: IntentModel | None = None) -> None:
        self.rules = rules
        self.model = model
        settings = rules.settings
        self._max_chars = settings.max_chars
        self._min_weight = settings.min_weight
        self._saturation = settings.saturation
        self._gap = settings.phrase_gap
        self._rank = {code: index for index, code in enumerate(settings.priority)}
        modifiers = rules.modifiers
        marks = {normalize(mark) for mark in modifiers.boundaries} | set(modifiers.boundaries)
        self._boundaries = frozenset(mark for mark in marks if mark and not mark.isspace())
        cue_sets = (modifiers.negation, modifiers.hedging)
        self._factor = tuple(cues.factor for cues in cue_sets)
        self._code_factor = tuple(cues.codes for cues in cue_sets)
        self._before = tuple(cues.before for cues in cue_sets)
        self._after = tuple(cues.after for cues in cue_sets)
        self._phrases: list[_Phrase] = []
        self._patterns: list[_Pattern] = []
        self._always: list[int] = []  # patterns without anchors
        self._hint_terms: dict[str, str] = {}  # normalised term → as configured
        entries: dict[str, list[tuple[Any, ...]]] = {}

        def add(term: str, entry: tuple[Any, ...]) -> None:
            key = normalize(term)
            if key:
                entries.setdefault(key, []).append((entry[0], len(key), *entry[1:]))  # (tag, length, payload…)

        for code, rule_set in rules.rule_sets().items():
            for word, weight in rule_set.keywords.items():
                add(word, (_KEYWORD, code, f"keyword:{word}", weight, rule_set.negatable))
            for phrase, weight in rule_set.phrases.items():
                parts = [normalize(p) for p in PHRASE_SEPARATOR.split(phrase) if p.strip()]
                index = len(self._phrases)
                self._phrases.append(_Phrase(code, f"phrase:{phrase}", weight, rule_set.negatable, len(parts)))
                for position, part in enumerate(parts):
                    add(part, (_PART, index, position))
            for pattern in rule_set.patterns:
                self._add_pattern(add, pattern, code, rule_set.negatable, hint=False)
        for kind_index, cue_set in enumerate(cue_sets):
            for cue in cue_set.cues:
                add(cue, (_CUE, kind_index, _BEFORE))
            for cue in cue_set.after_cues:
                add(cue, (_CUE, kind_index, _AFTER))
        for kind, hint in rules.hints.kinds().items():
            for term in hint.terms:
                self._hint_terms.setdefault(normalize(term), term)
                add(term, (_HINT, kind))
            for pattern in hint.patterns:
                self._add_pattern(add, pattern, kind, negatable=False, hint=True)
        self._automaton: Any = None
        if entries:
            automaton = ahocorasick.Automaton()
            for key, values in entries.items():
                automaton.add_word(key, tuple(values))
            automaton.make_automaton()
            self._automaton = automaton

    def _add_pattern(self, add: Any, pattern: PatternRule, code: str, negatable: bool, *, hint: bool) -> None:
        index = len(self._patterns)
        compiled = re.compile(pattern.regex)
        self._patterns.append(_Pattern(code, f"pattern:{pattern.label}", pattern.weight, negatable, compiled, hint))
        anchors = [a for a in pattern.anchor if normalize(a)]
        if not anchors:
            self._always.append(index)
        for anchor in anchors:
            add(anchor, (_ANCHOR, index))

    def classify(self, text: str) -> Classification:
        """Classify one message (see the module docstring for the formula)."""
        normalised = normalize(text[: self._max_chars]) if text else ""
        if not normalised:
            return EMPTY
        result = self._by_rules(normalised)
        return result if self.model is None else self._with_model(normalised, result, self.model)

    def _with_model(self, normalised: str, result: Classification, model: IntentModel) -> Classification:
        """Step 6 of the module docstring."""
        settings = self.rules.model
        if result.primary != OTHER:
            total = sum(_strongest_per_rule(result.hits, result.primary).values())
            if total >= settings.decisive_weight:
                return result
        prediction = model.predict(normalised)
        code = prediction.code
        if code in (OTHER, result.primary) or prediction.probability < settings.threshold:
            return result
        if result.negated and any(hit.code == code for hit in result.hits):
            return result
        weight = settings.weight * prediction.probability
        if result.hedged:
            weight *= self._code_factor[_HEDGING].get(code, self._factor[_HEDGING])
        intents = [code, *(c for c in result.intents if c not in (code, OTHER))]
        score = round(100 * (1 - math.exp(-weight / self._saturation)))
        hits = [*result.hits, Hit(code, "model", weight, 0, len(normalised))]
        return Classification(
            intents, code, score, hits, result.negated, result.hedged, "lost" in intents, result.hints
        )

    def _by_rules(self, normalised: str) -> Classification:
        keywords: list[_Found] = []
        parts: dict[int, list[tuple[int, int, int]]] = {}  # phrase → (part, start, end)
        cues: list[_Cue] = []
        run = list(self._always)
        hint_spans: list[tuple[int, int, str]] = []
        if self._automaton is not None:
            for last, values in self._automaton.iter(normalised):
                end = last + 1
                for value in values:
                    tag = value[0]
                    span = (end - value[1], end)
                    if tag == _KEYWORD:
                        keywords.append(span + value[2:])
                    elif tag == _PART:
                        parts.setdefault(value[2], []).append((value[3], *span))
                    elif tag == _CUE:
                        cues.append(span + value[2:])
                    elif tag == _ANCHOR:
                        run.append(value[2])
                    else:
                        hint_spans.append(span + value[2:])
        found = _outermost(keywords)
        if parts:  # a keyword that is also a part of a phrase of its own intent counts through the phrase
            phrases, used = self._phrase_hits(parts)
            found = [k for k in found if (k[2], k[0], k[1]) not in used]
            found.extend(phrases)
        hints: dict[str, list[str]] = {}
        for start, end, kind in _outermost(hint_spans):
            hints.setdefault(kind, []).append(self._hint_terms.get(normalised[start:end], normalised[start:end]))
        for index in dict.fromkeys(run):
            pattern = self._patterns[index]
            match = pattern.regex.search(normalised)
            if match is None or match.end() == match.start():
                continue
            if pattern.hint:
                hints.setdefault(pattern.code, []).append(match.group(0))
            else:
                found.append(
                    (match.start(), match.end(), pattern.code, pattern.rule, pattern.weight, pattern.negatable)
                )
        if not found:
            return Classification([OTHER], OTHER, 0, hints=_unique(hints)) if hints else EMPTY
        return self._decide(normalised, found, cues, _unique(hints))

    def _phrase_hits(self, parts: dict[int, list[tuple[int, int, int]]]) -> tuple[list[_Found], set[_Span]]:
        """Phrases whose parts occur in order within the gap, and the (code, start, end) of the parts used."""
        hits: list[_Found] = []
        used: set[_Span] = set()
        for index, occurrences in parts.items():
            phrase = self._phrases[index]
            if len(occurrences) < phrase.parts:
                continue  # cheap: most phrases meet only one common part ("能", "买")
            by_part: list[list[tuple[int, int]]] = [[] for _ in range(phrase.parts)]
            for position, start, end in occurrences:
                by_part[position].append((start, end))
            if not all(by_part):
                continue
            for first in by_part[0]:
                chain = [first]
                for later in by_part[1:]:
                    cursor = chain[-1][1]
                    following = [span for span in later if cursor <= span[0] <= cursor + self._gap]
                    if not following:
                        break
                    chain.append(min(following, key=lambda span: span[1]))
                if len(chain) == phrase.parts:
                    hits.append((first[0], chain[-1][1], phrase.code, phrase.rule, phrase.weight, phrase.negatable))
                    used.update((phrase.code, start, end) for start, end in chain)
                    break
        return hits, used

    def _modifier(self, text: str, start: int, end: int, cues: list[_Cue], negatable: bool) -> int | None:
        """The strongest modifier kind reaching the hit [start, end), or None (negation only if negatable)."""
        kind_found: int | None = None
        for cue_start, cue_end, kind, side in cues:
            if (kind == _NEGATION and not negatable) or (cue_start >= start and cue_end <= end):
                continue  # the cue is part of the hit itself
            if side == _BEFORE and cue_start < start and start - cue_end <= self._before[kind]:
                between = text[cue_end:start] if cue_end < start else ""
            elif side == _AFTER and cue_start >= end and cue_start - end <= self._after[kind]:
                between = text[end:cue_start]
            else:
                continue
            if self._boundaries.isdisjoint(between) and (kind_found is None or kind < kind_found):
                kind_found = kind
        return kind_found

    def _decide(
        self,
        text: str,
        found: list[_Found],
        cues: list[_Cue],
        hints: dict[str, list[str]],
    ) -> Classification:
        strongest: dict[tuple[str, str], float] = {}
        hits: list[Hit] = []
        negated = hedged = False
        for start, end, code, rule, weight, negatable in sorted(found):
            effective = weight
            if cues:
                kind = self._modifier(text, start, end, cues, negatable)
                if kind is not None:
                    effective = weight * self._code_factor[kind].get(code, self._factor[kind])
                    negated = negated or kind == _NEGATION
                    hedged = hedged or kind == _HEDGING
            hits.append(Hit(code, rule, effective, start, end))
            key = (code, rule)
            if effective > strongest.get(key, -1.0):
                strongest[key] = effective
        totals: dict[str, float] = {}
        for (code, _), weight in strongest.items():
            totals[code] = totals.get(code, 0.0) + weight
        ranked = sorted(
            (code for code, total in totals.items() if total >= self._min_weight and total > 0),
            key=lambda code: (-totals[code], self._rank.get(code, len(self._rank))),
        )
        if not ranked:
            return Classification([OTHER], OTHER, 0, hits, negated, hedged, False, hints)
        primary = ranked[0]
        score = round(100 * (1 - math.exp(-totals[primary] / self._saturation)))
        return Classification(ranked, primary, score, hits, negated, hedged, "lost" in ranked, hints)


def _outermost(spans: list[_S]) -> list[_S]:
    """Drop every span lying strictly inside a longer one (equal spans are all kept)."""
    if len(spans) < 2:
        return list(spans)
    kept: list[_S] = []
    for span in spans:
        start, end = span[0], span[1]
        inside = any(o[0] <= start and end <= o[1] and o[1] - o[0] > end - start for o in spans)
        if not inside:
            kept.append(span)
    return kept


def _strongest_per_rule(hits: list[Hit], code: str) -> dict[str, float]:
    strongest: dict[str, float] = {}
    for hit in hits:
        if hit.code == code:
            strongest[hit.rule] = max(strongest.get(hit.rule, 0.0), hit.weight)
    return strongest


def _unique(hints: dict[str, list[str]]) -> dict[str, list[str]]:
    return {kind: list(dict.fromkeys(values)) for kind, values in hints.items()}


def classifier_from_file(path: Path) -> Classifier:
    """Rules of ``path`` plus, when ``model.enabled``, the model trained on its examples file (relative to
    the file's folder). Raises :class:`~scrm.intent.rules.IntentRulesError`."""
    rules = load_rules(path)
    return Classifier(rules, model_for(rules.model, path.parent))
