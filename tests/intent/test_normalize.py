"""normalize(): full/half width, traditional → simplified, case, spaces."""

from __future__ import annotations

import pytest

from scrm.intent.normalize import normalize, traditional_characters


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("２０万以内能拿下吗", "20万以内能拿下吗"),  # full-width digits
        ("ＳＵＶ那款多少钱？", "suv那款多少钱?"),  # full-width latin and punctuation, lowercased
        ("週末可以試駕嗎", "周末可以试驾吗"),  # traditional
        ("黑內飾的現車有嗎", "黑内饰的现车有吗"),
        ("這輛車很乾淨", "这辆车很干净"),  # 乾 → 干 in 乾淨 (phrase-aware)
        ("  想   试驾\t\n一下  ", "想 试驾 一下"),  # whitespace runs collapsed, ends stripped
        ("老板给个实在价😂🚗", "老板给个实在价😂🚗"),  # emoji kept
        ("Model Y 和 CarPlay", "model y 和 carplay"),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_simplified_text_is_unchanged_apart_from_case_and_width() -> None:
    text = "这辆车落地多少钱，能不能再便宜点"
    assert normalize(text) == text.replace("，", ",")


def test_the_converter_gate_holds_traditional_but_not_simplified_characters() -> None:
    gate = traditional_characters()
    assert {"試", "駕", "車", "錢"} <= gate
    assert gate.isdisjoint("试驾车钱多少落地价")
