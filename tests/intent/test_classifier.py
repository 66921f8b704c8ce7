"""The rule classifier on the shipped rules (real customer-style text) and on small rules (the arithmetic)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from bot.settings import BUNDLED_SOP_DIR
from scrm.intent.classifier import Classifier
from scrm.intent.rules import IntentRules, IntentRulesError, load_rules
from scrm.intent.services import IntentServices


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return Classifier(load_rules(BUNDLED_SOP_DIR / "intent.yaml"))


def small(**sections: object) -> Classifier:
    return Classifier(IntentRules.model_validate(sections))


# ---- the shipped rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "primary"),
    [
        ("这车落地多少钱", "price"),
        ("首付多少 月供呢", "finance"),
        ("周六下午能试驾吗", "test_drive"),
        ("旧车能置换吗", "trade_in"),
        ("提车要等多久", "delivery"),
        ("座椅有通风吗", "config"),
        ("定金多少 今天过去交", "purchase"),
        ("保养多少钱一次", "after_sales"),
        ("我要投诉你们销售", "complaint"),
        ("已经在别家订了", "lost"),
        ("好的 谢谢", "other"),
    ],
)
def test_one_message_per_intent(shipped: Classifier, text: str, primary: str) -> None:
    result = shipped.classify(text)
    assert result.primary == primary
    assert result.intents[0] == primary
    assert (result.score > 0) == (primary != "other")


@pytest.mark.parametrize("text", ["暂时不考虑试驾", "不需要贷款", "这周不想试驾"])
def test_negation_cancels_the_intent(shipped: Classifier, text: str) -> None:
    result = shipped.classify(text)
    assert result.primary == "other"
    assert result.negated
    assert any(hit.weight == 0 for hit in result.hits)


def test_negation_does_not_reach_across_a_clause(shipped: Classifier) -> None:
    result = shipped.classify("贷款不考虑，想约个试驾")
    assert result.primary == "test_drive"
    assert "finance" not in result.intents


def test_hedging_dampens_but_keeps_the_intent(shipped: Classifier) -> None:
    plain = shipped.classify("先帮我算算分期")
    hedged = shipped.classify("不急 先帮我算算分期")
    assert plain.primary == hedged.primary == "finance"
    assert hedged.hedged and not plain.hedged
    assert hedged.score < plain.score


def test_a_hedged_lost_signal_is_not_lost(shipped: Classifier) -> None:
    assert shipped.classify("不考虑了 太贵了").lost
    hedged = shipped.classify("暂时不考虑了")
    assert hedged.primary == "other" and not hedged.lost and hedged.hedged


@pytest.mark.parametrize(
    "text", ["已经买了比亚迪了", "帮我取消订单", "太贵了 买不起 算了", "我们选了别的车", "订单取消 定金什么时候退"]
)
def test_lost_lead_signals(shipped: Classifier, text: str) -> None:
    result = shipped.classify(text)
    assert result.primary == "lost" and result.lost


def test_mixed_topics_list_every_intent_strongest_first(shipped: Classifier) -> None:
    result = shipped.classify("想周末去试驾，顺便问下旧车能置换吗，首付大概多少")
    assert {"test_drive", "trade_in", "finance"} <= set(result.intents)
    assert result.intents[0] == result.primary
    codes = [hit.code for hit in result.hits]
    assert codes.index("test_drive") < codes.index("trade_in") < codes.index("finance")  # hits in text order


@pytest.mark.parametrize(
    ("text", "primary"),
    [
        ("老板给个实在价😂", "price"),  # emoji
        ("今天能试驾吗🚗🚗", "test_drive"),
        ("落地价多少前啊", "price"),  # typo 钱 → 前
        ("周六下午能试价吗", "test_drive"),  # typo 驾 → 价
        ("题车要多久啊", "delivery"),  # typo 提 → 题
        ("ＳＵＶ那款多少钱", "price"),  # full-width
        ("１８期免息有哪些车型", "finance"),
        ("週末可以試駕嗎", "test_drive"),  # traditional
        ("保險明年還在你們這買可以嗎", "after_sales"),
        ("投訴！交車時間一拖再拖", "complaint"),
    ],
)
def test_emoji_typos_full_width_and_traditional(shipped: Classifier, text: str, primary: str) -> None:
    assert shipped.classify(text).primary == primary


def test_hints_models_budget_and_timeframe(shipped: Classifier) -> None:
    result = shipped.classify("想买一台L7，预算２０万左右，月底前能提车吗")
    assert result.hints["models"] == ["L7"]
    assert result.hints["budget"] == ["20万左右"]
    assert "月底前" in result.hints["timeframe"]
    assert "月底" not in result.hints["timeframe"]  # inside 月底前: the longer term wins


def test_empty_and_blank_messages_are_other(shipped: Classifier) -> None:
    for text in ("", "   ", "\n\t"):
        result = shipped.classify(text)
        assert (result.primary, result.intents, result.score, result.hits) == ("other", ["other"], 0, [])


def test_a_very_long_message_is_capped(shipped: Classifier) -> None:
    filler = "哈" * 5000
    assert shipped.classify("试驾" + filler).primary == "test_drive"
    assert shipped.classify(filler + "试驾").primary == "other"  # beyond the first 2000 characters
    assert shipped.classify("想试驾，" * 3000).primary == "test_drive"


def test_hits_point_into_the_normalised_text(shipped: Classifier) -> None:
    result = shipped.classify("你好，想預約試駕")
    hit = next(h for h in result.hits if h.rule == "keyword:试驾")
    assert (hit.code, hit.start, hit.end) == ("test_drive", 6, 8)


# ---- the arithmetic, on small rules -----------------------------------------------------------------------


def test_score_formula_and_repeats_count_once() -> None:
    classifier = small(intents={"price": {"keywords": {"多少钱": 4, "优惠": 2}}}, settings={"saturation": 8})
    one = classifier.classify("多少钱")
    assert one.score == round(100 * (1 - math.exp(-4 / 8)))
    assert classifier.classify("多少钱 多少钱 多少钱").score == one.score
    assert classifier.classify("多少钱 有优惠吗").score == round(100 * (1 - math.exp(-6 / 8)))


def test_min_weight_and_ties_follow_priority() -> None:
    rules = {
        "intents": {"price": {"keywords": {"价": 1, "价格": 3}}, "config": {"keywords": {"配置": 3}}},
        "settings": {"min_weight": 2, "priority": ["config", "price"]},
    }
    classifier = small(**rules)
    assert classifier.classify("价").primary == "other"  # below min_weight
    assert classifier.classify("价格和配置").intents == ["config", "price"]  # equal S: priority decides


def test_a_keyword_inside_a_longer_one_is_not_counted() -> None:
    classifier = small(intents={"after_sales": {"keywords": {"保养": 5}}, "price": {"keywords": {"保养套餐价": 6}}})
    result = classifier.classify("保养套餐价多少")
    assert [h.rule for h in result.hits] == ["keyword:保养套餐价"]
    assert result.intents == ["price"]


def test_phrases_need_their_parts_in_order_within_the_gap() -> None:
    classifier = small(intents={"test_drive": {"phrases": {"能不能…试": 4}}}, settings={"phrase_gap": 4})
    assert classifier.classify("能不能周末试一下").primary == "test_drive"
    assert classifier.classify("试一下能不能").primary == "other"  # wrong order
    assert classifier.classify("能不能下个月底前的周末试").primary == "other"  # gap too wide


def test_patterns_run_only_when_an_anchor_is_present() -> None:
    rules = {"intents": {"price": {"patterns": [{"regex": r"\d+万", "weight": 3, "anchor": ["万"]}]}}}
    classifier = small(**rules)
    assert classifier.classify("20万以内").primary == "price"
    assert classifier.classify("20块").primary == "other"


def test_per_code_factors_and_before_after_scope() -> None:
    rules = {
        "intents": {"finance": {"keywords": {"贷款": 4}}, "test_drive": {"keywords": {"试驾": 4}}},
        "modifiers": {
            "negation": {"cues": ["不要"], "after_cues": ["不要"], "before": 2, "after": 2},
            "hedging": {"cues": ["暂时"], "factor": 0.5, "codes": {"test_drive": 1}},
        },
    }
    classifier = small(**rules)
    assert classifier.classify("不要贷款").primary == "other"
    assert classifier.classify("贷款不要").primary == "other"  # cue after the hit
    assert classifier.classify("不要的话我再看看贷款").primary == "finance"  # cue too far before
    assert classifier.classify("暂时试驾").score == classifier.classify("试驾").score  # factor 1 for test_drive
    assert classifier.classify("暂时贷款").score < classifier.classify("贷款").score
    assert classifier.classify("贷款暂时").score == classifier.classify("贷款").score  # a before-only cue


def test_rule_less_rules_say_other() -> None:
    assert Classifier(IntentRules()).classify("多少钱").primary == "other"


# ---- IntentServices.classifier ----------------------------------------------------------------------------


def _touch(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_classifier_for_caches_and_reloads_on_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    intent = IntentServices(tmp_path)
    assert intent.classifier().classify("多少钱").primary == "other"  # no intent.yaml yet
    path = tmp_path / "intent.yaml"
    _touch(path, "intents:\n  price:\n    keywords: {多少钱: 4}\n", 1_000_000_000)
    first = intent.classifier()
    assert first.classify("多少钱").primary == "price"
    assert intent.classifier() is first
    _touch(path, "intents:\n  config:\n    keywords: {多少钱: 4}\n", 2_000_000_000)
    second = intent.classifier()
    assert second.classify("多少钱").primary == "config"
    _touch(path, "intents:\n  prise: {}\n", 3_000_000_000)
    assert intent.classifier() is second  # broken file: the last good rules stay
    assert "intent rules invalid" in caplog.text


def test_classifier_for_raises_when_the_first_load_fails(tmp_path: Path) -> None:
    intent = IntentServices(tmp_path)
    (tmp_path / "intent.yaml").write_text("intents: [\n", encoding="utf-8")
    with pytest.raises(IntentRulesError):
        intent.classifier()
