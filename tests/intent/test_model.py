"""The optional statistical intent model and how the classifier combines it with the rules."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bot.settings import BUNDLED_SOP_DIR
from scrm.intent.classifier import Classifier, classifier_from_file
from scrm.intent.model import RANDOM_STATE, char_ngrams, load_examples, train_model
from scrm.intent.normalize import normalize
from scrm.intent.rules import IntentRules, IntentRulesError, ModelSettings, load_rules
from scrm.intent.services import IntentServices

EXAMPLES: list[tuple[str, str]] = [
    ("什么时候能开一下", "test_drive"),
    ("想开一下感受感受", "test_drive"),
    ("周末去开一下", "test_drive"),
    ("能开一圈吗", "test_drive"),
    ("车子该做保养了", "after_sales"),
    ("做个保养要多久", "after_sales"),
    ("保养预约一下", "after_sales"),
    ("首保在哪里做", "after_sales"),
    ("你好", "other"),
    ("好的谢谢", "other"),
    ("收到", "other"),
    ("嗯嗯知道了", "other"),
]


def write_examples(path: Path, examples: list[tuple[str, str]] = EXAMPLES) -> Path:
    lines = [json.dumps({"text": text, "label": label}, ensure_ascii=False) for text, label in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rules_with(model: dict[str, object] | None = None) -> IntentRules:
    return IntentRules.model_validate(
        {
            "modifiers": {"negation": {"cues": ["不想"]}, "hedging": {"cues": ["可能"], "factor": 0.5}},
            "intents": {
                "price": {"keywords": {"多少钱": 10}},
                "test_drive": {"keywords": {"试驾": 3}},
                "after_sales": {"keywords": {"保养": 3}},
            },
            "model": {"enabled": True, "threshold": 0.4, "regularisation": 100, **(model or {})},
        }
    )


@pytest.fixture(scope="module")
def combined() -> Classifier:
    rules = rules_with()
    return Classifier(rules, train_model(EXAMPLES, regularisation=rules.model.regularisation))


def test_model_predicts_unseen_wording_and_probabilities_sum_to_one() -> None:
    model = train_model(EXAMPLES, regularisation=100)
    prediction = model.predict(normalize("下午过去开一下行吗"))
    assert prediction.code == "test_drive"
    probabilities = model.probabilities(normalize("下午过去开一下行吗"))
    assert set(probabilities) == {"after_sales", "other", "test_drive"}
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert model.predict(normalize("保养要预约吗")).code == "after_sales"


def test_prediction_matches_scikit_learn_on_the_same_fit() -> None:
    texts = [normalize(text) for text, _ in EXAMPLES]
    vectorizer = TfidfVectorizer(analyzer=char_ngrams, sublinear_tf=True, norm="l2")
    reference = LogisticRegression(C=3.0, max_iter=2000, random_state=RANDOM_STATE)
    reference.fit(vectorizer.fit_transform(texts), [label for _, label in EXAMPLES])
    model = train_model(EXAMPLES, regularisation=3.0)
    for text in ("开一下开一下", "保养保养做个", "完全没见过的字", "好的"):
        expected = reference.predict_proba(vectorizer.transform([normalize(text)]))[0]
        ours = model.probabilities(normalize(text))
        assert [ours[str(code)] for code in reference.classes_] == pytest.approx(list(expected), abs=1e-9)


def test_two_class_examples_give_symmetric_probabilities() -> None:
    model = train_model([(t, label) for t, label in EXAMPLES if label != "other"], regularisation=100)
    probabilities = model.probabilities(normalize("开一下"))
    assert probabilities["test_drive"] > 0.5 > probabilities["after_sales"]
    assert sum(probabilities.values()) == pytest.approx(1.0)


def test_training_is_deterministic() -> None:
    first = train_model(EXAMPLES)
    second = train_model(EXAMPLES)
    for text in ("开一下", "保养", "你好呀", "随便什么"):
        assert first.probabilities(normalize(text)) == second.probabilities(normalize(text))


def test_decisive_rules_win(combined: Classifier) -> None:
    assert combined.model is not None
    leaning = combined.model.predict(normalize("开一下多少钱"))
    assert leaning.code == "test_drive" and leaning.probability >= combined.rules.model.threshold
    result = combined.classify("开一下多少钱")  # price weight 10 ≥ decisive_weight 4: the rules decide
    assert result.primary == "price"
    assert all(hit.rule != "model" for hit in result.hits)


def test_model_fills_other(combined: Classifier) -> None:
    assert Classifier(combined.rules).classify("明天能开一下吗").primary == "other"
    result = combined.classify("明天能开一下吗")
    assert result.primary == "test_drive"
    assert result.intents == ["test_drive"]
    model_hit = next(hit for hit in result.hits if hit.rule == "model")
    assert model_hit.weight == pytest.approx(4 * combined.model.predict(normalize("明天能开一下吗")).probability)  # type: ignore[union-attr]
    assert 0 < result.score < 100


def test_model_overrules_a_weak_rule_hit_and_keeps_it_listed(combined: Classifier) -> None:
    result = combined.classify("试驾完了该做保养了")  # rules: test_drive 3 and after_sales 3, both weak
    assert Classifier(combined.rules).classify("试驾完了该做保养了").primary == "test_drive"
    assert result.primary == "after_sales"
    assert result.intents == ["after_sales", "test_drive"]


def test_low_probability_keeps_the_rules_result() -> None:
    rules = rules_with({"threshold": 0.99})
    classifier = Classifier(rules, train_model(EXAMPLES, regularisation=100))
    assert classifier.classify("明天能开一下吗").primary == "other"


def test_a_negated_intent_is_not_revived(combined: Classifier) -> None:
    result = combined.classify("不想试驾开一下")
    assert result.negated
    assert combined.model is not None
    assert combined.model.predict(normalize("不想试驾开一下")).code == "test_drive"
    assert result.primary == "other"


def test_hedged_message_stays_hedged(combined: Classifier) -> None:
    plain = combined.classify("该做个保养了吧")
    hedged = combined.classify("可能该做个保养了吧")
    assert hedged.primary == plain.primary == "after_sales"
    assert hedged.hedged and not plain.hedged
    assert hedged.score < plain.score


def test_disabled_model_is_rules_only(tmp_path: Path) -> None:
    intent = IntentServices(tmp_path)
    write_examples(tmp_path / "intent_examples.jsonl")
    (tmp_path / "intent.yaml").write_text("intents:\n  after_sales:\n    keywords: {保养: 3}\n", encoding="utf-8")
    classifier = intent.classifier()
    assert classifier.model is None
    assert classifier.classify("明天能开一下吗").primary == "other"


def test_missing_examples_file_means_rules_only_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "intent.yaml").write_text(
        "intents:\n  after_sales:\n    keywords: {保养: 3}\nmodel:\n  enabled: true\n  examples: missing.jsonl\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="scrm.intent.model"):
        classifier = classifier_from_file(tmp_path / "intent.yaml")
    assert classifier.model is None
    assert any("rules only" in record.getMessage() for record in caplog.records)
    assert classifier.classify("该保养了").primary == "after_sales"


def test_classifier_for_retrains_when_examples_change(tmp_path: Path) -> None:
    intent = IntentServices(tmp_path)
    examples = write_examples(tmp_path / "intent_examples.jsonl")
    (tmp_path / "intent.yaml").write_text("model:\n  enabled: true\n  threshold: 0.4\n  regularisation: 100\n")
    first = intent.classifier()
    assert first.model is not None
    assert intent.classifier() is first
    write_examples(examples, [*EXAMPLES, ("开一下", "other"), ("开一下吧", "other")])
    stat = examples.stat()
    os.utime(examples, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    second = intent.classifier()
    assert second is not first
    assert second.model is not None and "other" in second.model.classes


def test_bad_example_lines_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "examples.jsonl"
    path.write_text(
        '{"text": "你好", "label": "other"}\nnot json\n{"text": "x", "label": "nope"}\n\n', encoding="utf-8"
    )
    with caplog.at_level(logging.WARNING, logger="scrm.intent.model"):
        assert load_examples(path) == [("你好", "other")]
    assert sum("skipped" in record.getMessage() for record in caplog.records) == 2


def test_model_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "intent.yaml"
    path.write_text("model:\n  enabled: true\n  threshold: 1.5\n", encoding="utf-8")
    with pytest.raises(IntentRulesError) as caught:
        load_rules(path)
    assert caught.value.problems[0].line == 3
    assert ModelSettings().enabled is False


def test_shipped_rules_enable_the_model_on_the_shipped_examples() -> None:
    classifier = classifier_from_file(BUNDLED_SOP_DIR / "intent.yaml")
    assert classifier.rules.model.enabled
    assert classifier.model is not None
    assert set(classifier.model.classes) == set(np.unique([label for _, label in EXAMPLES])) | {
        "price",
        "finance",
        "trade_in",
        "delivery",
        "config",
        "purchase",
        "complaint",
        "lost",
    }
    assert classifier.classify("这车落地多少钱").primary == "price"
