"""Bounded JSON decoding: the depth is measured before parsing and without recursion, strings do not count, and
every bad document is one :class:`JsonRefused` with a code and a reason in both languages."""

from __future__ import annotations

import pytest

from bot.edge.bounded_json import JsonRefused, json_depth, load_bounded_json


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"k":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        (b"1", 0),
        (b'"[[[{{{"', 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": "]]]["}], "c": {}}', 3),
        (b'["quote \\" and [[ in a string", ["x\\\\"]]', 2),
        (b'[]\n[[]]\n{"a": [[[]]]}\n', 4),  # JSON lines: each line's own depth
        (b'{"unterminated: [[[\n[1]', 2),  # a string ends at its line at the latest
        ('{"车型": ["L7", {"价格": "[很贵]"}]}'.encode(), 3),
        (nested_arrays(2000), 2000),
        (nested_objects(2000), 2000),
        (b"[" * 2000, 2000),  # unbalanced: counted as it comes, the parser refuses it later
    ],
)
def test_depth_ignores_strings_and_never_recurses(document: bytes, depth: int) -> None:
    assert json_depth(document) == depth


@pytest.mark.parametrize("deep", [nested_arrays(2000), nested_objects(2000), nested_arrays(9), nested_objects(9)])
def test_deeper_than_allowed_is_refused_before_parsing(deep: bytes) -> None:
    with pytest.raises(JsonRefused) as refused:
        load_bounded_json(deep, 8, what="body")
    depth = json_depth(deep)
    assert (refused.value.code, refused.value.zh, refused.value.en) == (
        "json_too_deep",
        f"JSON 嵌套过深：{depth} 层，最多 8 层",
        f"body nests JSON {depth} deep; at most 8 levels are accepted",
    )


def test_at_the_limit_is_parsed() -> None:
    assert load_bounded_json(nested_arrays(8), 8) == [[[[[[[[]]]]]]]]
    assert load_bounded_json(nested_objects(8).decode(), 8) == {"k": {"k": {"k": {"k": {"k": {"k": {"k": {"k": 1}}}}}}}}


@pytest.mark.parametrize(
    ("document", "code", "zh_start"),
    [
        (b"{not json", "bad_json", "JSON 格式错误（第 1 行第 2 列）"),
        (b"[1, 2", "bad_json", "JSON 格式错误"),
        (b"", "bad_json", "JSON 格式错误"),
        (b"[" + b"9" * 5000 + b"]", "bad_json", "JSON 无法解析"),  # ValueError, not JSONDecodeError
        (b'{"a": "\xff"}', "not_utf8", "请求体不是 UTF-8 编码"),
        ("\ufeff{}".encode("utf-16"), "not_utf8", "请求体不是 UTF-8 编码"),  # json.loads would guess UTF-16
    ],
)
def test_malformed_documents_are_one_refusal(document: bytes, code: str, zh_start: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        load_bounded_json(document, 8)
    assert refused.value.code == code
    assert refused.value.zh.startswith(zh_start)
    assert refused.value.en.startswith("body is not")


@pytest.mark.parametrize(
    ("document", "en"),
    [
        (b'{"a": NaN}', "body holds a number that is NaN or infinite"),
        (b"[-Infinity]", "body holds a number that is NaN or infinite"),
        (b"[1e400]", "body holds a number that is NaN or infinite"),  # parsed as inf
        (b'["a\\u0000b"]', "body holds a string with a NUL character or a lone surrogate"),
        (b'{"\\ud800": 1}', "body holds a string with a NUL character or a lone surrogate"),
        (b'[{"x": ["\\udfff"]}]', "body holds a string with a NUL character or a lone surrogate"),
    ],
)
def test_values_no_database_can_store_are_refused(document: bytes, en: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        load_bounded_json(document, 8)
    assert (refused.value.code, refused.value.en) == ("unstorable_json", en)


def test_a_surrogate_pair_is_one_character_and_accepted() -> None:
    assert load_bounded_json(b'["\\ud83d\\ude97 \\u8bd5\\u9a7e", 1.5e3]', 8) == ["🚗 试驾", 1500.0]
