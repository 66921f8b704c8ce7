"""``lianyi intent classify`` (the DESIGN.md JSON-lines contract) and ``lianyi intent eval``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.cli.intent import coarse, evaluate
from bot.settings import BUNDLED_SOP_DIR

DATA = Path(__file__).resolve().parent.parent / "data" / "intent"
RULES = BUNDLED_SOP_DIR / "intent.yaml"


def run(*args: str, stdin: str = "") -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["intent", *args], input=stdin)
    return result.exit_code, result.output


def test_classify_adds_intents_primary_and_score_and_keeps_other_keys() -> None:
    lines = [{"text": "週末可以試駕嗎", "id": 1, "meta": {"from": "kf"}}, {"text": "", "id": 2}]
    code, output = run("classify", "--rules", str(RULES), stdin="".join(json.dumps(x) + "\n" for x in lines))
    assert code == 0
    first, second = (json.loads(line) for line in output.splitlines())
    assert first["id"] == 1 and first["meta"] == {"from": "kf"} and first["text"] == "週末可以試駕嗎"
    assert first["primary"] == "test_drive" and first["intents"][0] == "test_drive" and 0 < first["score"] <= 100
    assert second == {"text": "", "id": 2, "intents": ["other"], "primary": "other", "score": 0}


def test_classify_answers_a_bad_line_with_an_error_object_and_goes_on() -> None:
    stdin = '{"text": "多少钱"}\nnot json\n[1, 2]\n{"text": 5}\n\n{"text": "提车要多久"}\n'
    code, output = run("classify", "--rules", str(RULES), stdin=stdin)
    assert code == 0
    out = [json.loads(line) for line in output.splitlines()]
    assert [o.get("primary") for o in out] == ["price", None, None, None, "delivery"]
    assert [o.get("line") for o in out[1:4]] == [2, 3, 4]
    assert all("error" in o for o in out[1:4])


def test_classify_reads_stdin_and_writes_stdout_as_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "intent.yaml").write_text(RULES.read_text("utf-8"), "utf-8")
    stdin = '{"text": "旧车能置换吗", "n": 1}\n{"text": "已经在别家订了", "n": 2}\n'
    done = subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", "intent", "classify"],
        input=stdin.encode("utf-8"),
        capture_output=True,
        env={"LIANYI_SOP_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    out = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert [(o["n"], o["primary"]) for o in out] == [(1, "trade_in"), (2, "lost")]


def test_rules_that_do_not_load_stop_the_command(tmp_path: Path) -> None:
    broken = tmp_path / "intent.yaml"
    broken.write_text("intents:\n  prise: {}\n", encoding="utf-8")
    code, output = run("classify", "--rules", str(broken), stdin='{"text": "x"}\n')
    assert code == 1
    assert f"{broken}:2:3" in output


def test_evaluate_arithmetic() -> None:
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", "a")]
    result = evaluate(pairs, ("a", "b", "c"))
    by_label = {c.label: c for c in result.classes}
    assert (by_label["a"].precision, by_label["a"].recall) == (0.5, 0.5)
    assert by_label["b"].precision == pytest.approx(2 / 3) and by_label["b"].recall == 1.0
    assert by_label["c"].f1 == 0.0 and by_label["c"].support == 1
    assert result.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result.confusion[("c", "a")] == 1 and result.accuracy == pytest.approx(3 / 5)


def test_coarse_folds_the_purchase_codes() -> None:
    folded = {code: coarse(code) for code in ("price", "config", "purchase", "after_sales", "lost", "other")}
    assert folded == {
        "price": "purchase",
        "config": "purchase",
        "purchase": "purchase",
        "after_sales": "after_sales",
        "lost": "lost",
        "other": "other",
    }


def test_eval_prints_per_class_figures_and_a_confusion_matrix(tmp_path: Path) -> None:
    labelled = tmp_path / "few.jsonl"
    rows = [("多少钱", "price"), ("想试驾", "test_drive"), ("你好", "other"), ("保养多少钱", "price")]
    labelled.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows), "utf-8")
    code, output = run("eval", str(labelled), "--rules", str(RULES))
    assert code == 0, output
    assert "混淆矩阵" in output and "after_sales" in output
    assert re.search(r"│ price\s+│\s+1\.000 │\s+0\.500 │", output)  # one of two price lines found
    assert "macro-F1:" in output


def test_eval_rejects_an_unknown_label(tmp_path: Path) -> None:
    labelled = tmp_path / "bad.jsonl"
    labelled.write_text('{"text": "多少钱", "label": "prices"}\n', "utf-8")
    code, output = run("eval", str(labelled), "--rules", str(RULES))
    assert code == 1 and "bad.jsonl:1" in output


def _macro(output: str) -> float:
    match = re.search(r"macro-F1: ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def test_coarse_macro_f1_on_the_dev_set_reaches_the_target() -> None:
    code, output = run("eval", str(DATA / "dev.jsonl"), "--coarse", "--rules", str(RULES))
    assert code == 0
    assert all(label in output for label in ("purchase", "after_sales", "complaint", "lost", "other"))
    assert _macro(output) >= 0.85
    code, fine = run("eval", str(DATA / "dev.jsonl"), "--rules", str(RULES))
    assert code == 0
    print(f"dev.jsonl macro-F1: coarse {_macro(output):.4f}, fine {_macro(fine):.4f}")  # no target for fine
