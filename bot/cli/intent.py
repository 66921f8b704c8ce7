"""``lianyi intent``: classify messages and evaluate the rules against a labelled file.

``lianyi intent classify`` reads JSON lines ``{"text": ...}`` on stdin and writes, for each input line, one
output line: the same object (other keys kept) with ``"intents"``, ``"primary"`` and ``"score"`` added. A line
that is not a JSON object with a string ``text`` becomes ``{"error": "...", "line": N}`` on that output line
and the command goes on (exit 0); blank input lines are skipped. Output is UTF-8, one object per line, in
input order.

``lianyi intent eval FILE.jsonl [--coarse]`` reads lines ``{"text", "label"}`` and prints per-class
precision / recall / F1, the macro-F1 and a confusion matrix. ``--coarse`` folds price, finance, test_drive,
trade_in, delivery, config and purchase into ``purchase`` (classes purchase / after_sales / complaint / lost /
other).

Both use ``--rules PATH``, else ``intent.yaml`` of ``LIANYI_SOP_DIR`` (no WeCom settings needed).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.table import Table

from bot.cli.sop import default_sop_dir
from scrm.intent.classifier import Classifier, classifier_from_file
from scrm.intent.rules import INTENT_CODES, INTENT_FILE, PURCHASE_CODES, IntentRulesError

COARSE_CODES: tuple[str, ...] = ("purchase", "after_sales", "complaint", "lost", "other")


@dataclass(frozen=True)
class ClassReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    classes: list[ClassReport]
    macro_f1: float
    accuracy: float
    confusion: Counter[tuple[str, str]]  # (gold, predicted) → count
    labels: tuple[str, ...]


def coarse(code: str) -> str:
    """The coarse class of an intent code (the purchase codes fold into ``purchase``)."""
    return "purchase" if code in PURCHASE_CODES else code


def evaluate(pairs: list[tuple[str, str]], labels: tuple[str, ...]) -> Evaluation:
    """Precision / recall / F1 per label from (gold, predicted) pairs; macro-F1 over ``labels``."""
    confusion: Counter[tuple[str, str]] = Counter(pairs)
    classes: list[ClassReport] = []
    for label in labels:
        true_positive = confusion[(label, label)]
        predicted = sum(count for (_, guess), count in confusion.items() if guess == label)
        support = sum(count for (gold, _), count in confusion.items() if gold == label)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes.append(ClassReport(label, precision, recall, f1, support))
    macro = sum(c.f1 for c in classes) / len(classes) if classes else 0.0
    accuracy = sum(1 for gold, guess in pairs if gold == guess) / len(pairs) if pairs else 0.0
    return Evaluation(classes, macro, accuracy, confusion, labels)


def _classifier(rules_path: Path | None) -> Classifier:
    path = rules_path or default_sop_dir() / INTENT_FILE
    if not path.is_file():
        raise click.UsageError(f"找不到意向规则文件：{path}（用 --rules 指定）")
    try:
        return classifier_from_file(path)
    except IntentRulesError as exc:
        raise click.ClickException(f"意向规则有错误：\n{exc}") from None


def _classified_line(classifier: Classifier, raw: str, number: int) -> dict[str, Any]:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {"error": f"invalid JSON: {exc.msg}", "line": number}
    if not isinstance(item, dict):
        return {"error": "expected a JSON object", "line": number}
    text = item.get("text")
    if not isinstance(text, str):
        return {"error": 'missing string field "text"', "line": number}
    return {**item, **classifier.classify(text).as_json()}


def classify_stream(classifier: Classifier, source: IO[str], sink: IO[str]) -> int:
    """Classify every JSON line of ``source`` into ``sink``; returns the number of error lines."""
    errors = 0
    for number, raw in enumerate(source, start=1):
        if not raw.strip():
            continue
        result = _classified_line(classifier, raw, number)
        errors += "error" in result and "primary" not in result
        sink.write(json.dumps(result, ensure_ascii=False) + "\n")
    sink.flush()
    return errors


@click.group("intent")
def intent() -> None:
    """Intent rules: classify messages, evaluate on a labelled file (意向识别)."""


rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="intent.yaml 路径（默认：LIANYI_SOP_DIR/intent.yaml）",
)


@intent.command("classify")
@rules_option
def classify_command(rules_path: Path | None) -> None:
    """Read JSON lines {"text": ...} on stdin; write them back with intents, primary and score."""
    classifier = _classifier(rules_path)
    with (
        click.open_file("-", encoding="utf-8", errors="replace") as source,
        click.open_file("-", "w", encoding="utf-8") as sink,
    ):
        classify_stream(classifier, source, sink)


@intent.command("eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--coarse", "use_coarse", is_flag=True, help="合并购车类意向：purchase / after_sales / complaint / lost / other"
)
@rules_option
def eval_command(file: Path, use_coarse: bool, rules_path: Path | None) -> None:
    """Per-class precision / recall / F1, macro-F1 and confusion matrix on FILE (lines {"text", "label"})."""
    classifier = _classifier(rules_path)
    labels = COARSE_CODES if use_coarse else INTENT_CODES
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            text, label = item["text"], item["label"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise click.ClickException(f'{file}:{number}: 每行应是 {{"text", "label"}} JSON 对象') from None
        if label not in INTENT_CODES or not isinstance(text, str):
            raise click.ClickException(f"{file}:{number}: 未知标签 {label!r}")
        predicted = classifier.classify(text).primary
        pairs.append((coarse(label), coarse(predicted)) if use_coarse else (label, predicted))
    console = Console() if sys.stdout.isatty() else Console(width=160)
    print_evaluation(evaluate(pairs, labels), console, title=f"{file.name}{'（粗粒度）' if use_coarse else ''}")


def print_evaluation(result: Evaluation, console: Console, *, title: str) -> None:
    table = Table(title=f"{title}：各类指标")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for item in result.classes:
        table.add_row(item.label, f"{item.precision:.3f}", f"{item.recall:.3f}", f"{item.f1:.3f}", str(item.support))
    console.print(table)
    matrix = Table(title="混淆矩阵（行：标注，列：预测）")
    matrix.add_column("gold \\ predicted")
    for label in result.labels:
        matrix.add_column(label, justify="right")
    for gold in result.labels:
        matrix.add_row(gold, *(str(result.confusion[(gold, guess)] or "·") for guess in result.labels))
    console.print(matrix)
    total = sum(c.support for c in result.classes)
    console.print(f"macro-F1: {result.macro_f1:.4f}  accuracy: {result.accuracy:.4f}  messages: {total}")
