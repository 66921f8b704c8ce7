"""intent.yaml: the shipped file loads; every kind of mistake is reported at file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import BUNDLED_SOP_DIR
from scrm.folder_check import check_folder, check_path
from scrm.intent.rules import INTENT_CODES, IntentRules, IntentRulesError, load_rules
from scrm.sop.source import load_folder

SHIPPED = BUNDLED_SOP_DIR / "intent.yaml"


def _load(folder: Path, text: str) -> IntentRules:
    path = folder / "intent.yaml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path)


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "intent.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IntentRulesError) as caught:
        load_rules(path)
    assert caught.value.path == str(path)
    return [f"{p.line}:{p.col} {p.message}" for p in caught.value.problems]


def test_the_shipped_rules_load_with_every_ruled_intent() -> None:
    rules = load_rules(SHIPPED)
    assert set(rules.rule_sets()) == set(INTENT_CODES) - {"other"}
    assert all(rule_set.keywords for rule_set in rules.rule_sets().values())
    assert rules.modifiers.negation.cues and rules.modifiers.hedging.cues
    assert rules.hints.models.terms and rules.hints.budget.patterns and rules.hints.timeframe.terms
    assert rules.scoring.levels.H > rules.scoring.levels.A > rules.scoring.levels.B
    assert set(rules.tags.intents) == set(INTENT_CODES) - {"other"}


def test_defaults_of_the_scoring_and_tag_sections(tmp_path: Path) -> None:
    rules = _load(tmp_path, "version: 1\n")
    assert rules.scoring.half_life_days == 14
    assert (rules.scoring.levels.H, rules.scoring.levels.A, rules.scoring.levels.B) == (80, 60, 35)
    assert rules.scoring.behaviours["test_drive_booking"] > rules.scoring.behaviours["click"]
    assert rules.scoring.intent_weights["lost"] < 0
    assert rules.scoring.lost_stage_on == ["lost"]
    assert (rules.tags.group, rules.tags.level_group, rules.tags.stage_group) == ("意向标签", "意向等级", "客户阶段")
    assert rules.tags.intents["test_drive"] == "试驾"


def test_partial_intent_weights_keep_the_other_defaults(tmp_path: Path) -> None:
    rules = _load(tmp_path, "scoring:\n  intent_weights: {price: 30}\n")
    assert rules.scoring.intent_weights["price"] == 30
    assert rules.scoring.intent_weights["lost"] == -40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intents:\n  prise:\n    keywords: {多少钱: 3}\n", "2:3 未知的意向代码：prise"),
        ("intents:\n  lost:\n    keywords: {算了: 3}\n", "2:3 战败信号请写在顶层的 lost 段"),
        ("intents:\n  price:\n    keywords: {多少钱: 0}\n", "3:21"),
        ("intents:\n  price:\n    keywords: {多少钱: many}\n", "3:21"),
        ("intents:\n  price:\n    phrases: {能不能试驾: 3}\n", "3:15 短语 能不能试驾 至少要有两段"),
        ("intents:\n  price:\n    patterns:\n      - {regex: '(万'}\n", "4:17 正则表达式无效"),
        ("intents:\n  price:\n    keywrods: {多少钱: 3}\n", "3:5"),
        ("modifiers:\n  hedging:\n    codes: {lots: 0}\n", "3:13 未知的意向代码：lots"),
        ("scoring:\n  levels: {H: 30, A: 60, B: 35}\n", "2:3 等级阈值必须 H > A > B"),
        ("intents: [price\n", "2:1 方括号 [ ] 列表没有正确闭合"),
        ("- a\n- b\n", "1:1 intent.yaml 应是一个映射"),
        ("settings: {max_chars: 10}\nsettings: {max_chars: 20}\n", "2:1 字段 settings 重复出现"),
        ("settings:\n  priority: [price, other]\n", "2:3 未知的意向代码：other"),
    ],
    ids=[
        "unknown_code",
        "lost_under_intents",
        "zero_weight",
        "weight_not_a_number",
        "one_part_phrase",
        "bad_regex",
        "unknown_key",
        "unknown_code_in_factors",
        "levels_order",
        "yaml_syntax",
        "not_a_mapping",
        "duplicate_key",
        "other_in_priority",
    ],
)
def test_mistakes_are_reported_at_their_position(tmp_path: Path, text: str, expected: str) -> None:
    position, _, message = expected.partition(" ")
    problems = _problems(tmp_path, text)
    assert any(p.startswith(position + " ") and message in p for p in problems), problems


def test_the_error_prints_file_line_col_message(tmp_path: Path) -> None:
    path = tmp_path / "intent.yaml"
    path.write_text("intents:\n  prise: {}\n", encoding="utf-8")
    with pytest.raises(IntentRulesError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}:2:3 ")
    assert "未知的意向代码：prise" in str(caught.value)


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IntentRulesError, match="无法读取"):
        load_rules(tmp_path / "missing.yaml")


def test_sop_check_reports_intent_yaml_problems_as_sop027(tmp_path: Path) -> None:
    (tmp_path / "intent.yaml").write_text("intents:\n  price:\n    patterns:\n      - {regex: '[a'}\n", "utf-8")
    problems = check_folder(tmp_path)
    assert [(Path(p.path).name, p.line, p.col, p.code) for p in problems] == [("intent.yaml", 4, 17, "SOP027")]
    assert "正则表达式无效" in problems[0].message
    only, count = check_path(tmp_path / "intent.yaml")
    assert [p.code for p in only] == ["SOP027"] and count == 1


def test_intent_yaml_is_not_loaded_as_an_sop_template(tmp_path: Path) -> None:
    (tmp_path / "intent.yaml").write_text(SHIPPED.read_text("utf-8"), "utf-8")
    assert load_folder(tmp_path).sources == {}
    assert check_folder(tmp_path) == []
