"""The optional statistical intent model: character n-grams of the normalised text, TF-IDF, logistic regression.

It is trained when the rules are loaded (once per rules version, see
:meth:`scrm.intent.services.IntentServices.classifier`) on the operator's labelled examples file (``model.examples`` in
``intent.yaml``, JSON lines ``{"text", "label"}``, by default ``intent_examples.jsonl`` next to it). Training
uses scikit-learn (``TfidfVectorizer`` with our own n-gram analyser, ``LogisticRegression`` with a fixed
``random_state``); prediction does not call scikit-learn: the fitted vocabulary, IDF and coefficients are kept
as plain arrays and one message costs a dictionary look-up per n-gram and one small matrix product.

How the classifier combines the model with the rules is documented in :mod:`scrm.intent.classifier`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from scrm.intent.normalize import normalize
from scrm.intent.rules import INTENT_CODES, ModelSettings

__all__ = [
    "IntentModel",
    "ModelPrediction",
    "char_ngrams",
    "examples_mtime",
    "load_examples",
    "model_for",
    "train_model",
]

log = logging.getLogger(__name__)
NGRAM_MIN, NGRAM_MAX = 1, 3
RANDOM_STATE = 0
_Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ModelPrediction:
    code: str
    probability: float


def char_ngrams(text: str) -> list[str]:
    """Character 1–3-grams of already normalised text (spaces included: they mark pauses)."""
    grams: list[str] = []
    length = len(text)
    for size in range(NGRAM_MIN, NGRAM_MAX + 1):
        grams.extend(text[i : i + size] for i in range(length - size + 1))
    return grams


class IntentModel:
    """A fitted model as plain arrays; :meth:`predict` is pure and thread-safe."""

    def __init__(self, vocabulary: dict[str, int], idf: _Floats, coef: _Floats, intercept: _Floats, classes: list[str]):
        self._vocabulary = vocabulary
        self._idf = idf
        self._weights = np.ascontiguousarray(coef.T)  # feature → per-class weights
        self._intercept = intercept
        self.classes = classes

    def probabilities(self, normalised: str) -> dict[str, float]:
        """P(code | text) for every class the model knows (``normalised`` as :func:`normalize` returns it)."""
        counts = Counter(self._vocabulary[g] for g in char_ngrams(normalised) if g in self._vocabulary)
        scores = self._intercept.copy()
        if counts:
            indices = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (1.0 + np.log(tf)) * self._idf[indices]  # sublinear tf × idf, then l2-normalised
            values /= math.sqrt(float(values @ values))
            scores += values @ self._weights[indices]
        scores -= scores.max()
        exp = np.exp(scores)
        exp /= exp.sum()
        return {code: float(p) for code, p in zip(self.classes, exp, strict=True)}

    def predict(self, normalised: str) -> ModelPrediction:
        """The most probable class (ties: the earlier class) and its probability."""
        probabilities = self.probabilities(normalised)
        code = max(self.classes, key=lambda c: probabilities[c])
        return ModelPrediction(code, probabilities[code])


def train_model(examples: list[tuple[str, str]], *, regularisation: float = 10.0) -> IntentModel:
    """Fit on (text, label) pairs (texts raw; they are normalised here). Needs at least two labels."""
    texts = [normalize(text) for text, _ in examples]
    labels = [label for _, label in examples]
    vectorizer = TfidfVectorizer(analyzer=char_ngrams, sublinear_tf=True, norm="l2")
    matrix = vectorizer.fit_transform(texts)
    classifier = LogisticRegression(C=regularisation, max_iter=2000, random_state=RANDOM_STATE)
    classifier.fit(matrix, labels)
    classes = [str(code) for code in classifier.classes_]
    coef = np.asarray(classifier.coef_, dtype=np.float64)
    intercept = np.asarray(classifier.intercept_, dtype=np.float64)
    if len(classes) == 2:  # binary: sklearn keeps one row for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    vocabulary = {str(gram): int(index) for gram, index in vectorizer.vocabulary_.items()}
    idf = np.asarray(vectorizer.idf_, dtype=np.float64)
    return IntentModel(vocabulary, idf, coef, intercept, classes)


def load_examples(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs of a JSON-lines file; lines that are not ``{"text": str, "label": code}`` are
    skipped with a warning (an operator's typo must not switch the model off)."""
    examples: list[tuple[str, str]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError:
            item = None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or item.get("label") not in INTENT_CODES:
            log.warning('intent examples %s:%d skipped: expected {"text", "label"} with a known code', path, number)
            continue
        examples.append((item["text"], item["label"]))
    return examples


def model_for(settings: ModelSettings, sop_dir: Path) -> IntentModel | None:
    """The model ``settings`` ask for, trained on its examples file (relative paths: from ``sop_dir``);
    None when disabled, or — with a logged warning — when the file is missing or has fewer than two labels."""
    if not settings.enabled:
        return None
    path = Path(settings.examples)
    if not path.is_absolute():
        path = sop_dir / path
    try:
        examples = load_examples(path)
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("intent model off, rules only: cannot read examples file %s: %s", path, exc)
        return None
    if len({label for _, label in examples}) < 2:
        log.warning("intent model off, rules only: %s needs examples of at least two labels", path)
        return None
    return train_model(examples, regularisation=settings.regularisation)


def examples_mtime(settings: ModelSettings, sop_dir: Path) -> int:
    """The examples file's mtime (ns) for cache keys; 0 when disabled or missing."""
    if not settings.enabled:
        return 0
    path = Path(settings.examples)
    try:
        return (path if path.is_absolute() else sop_dir / path).stat().st_mtime_ns
    except OSError:
        return 0
