"""Decoding untrusted JSON with a bounded nesting depth, for every endpoint that takes JSON (the AI bot, ingest, the
staff API).

Python's :mod:`json` recurses once per nested array or object and raises ``RecursionError`` around depth 1,000, so
the depth is measured *before* parsing, without recursion: strings are cut out with one regular expression (a JSON
string cannot span a line), everything but brackets is deleted, and the running depth is a prefix sum — all of it
C-speed over the bytes, 15–50 ms per MiB. A body deeper than allowed is refused without ever reaching the parser;
the size is bounded earlier, by :func:`bot.edge.body.read_body`. A parsed value is then walked for what JSON allows
but no database here stores (NUL, lone surrogates, NaN/Infinity). Every refusal is a :class:`JsonRefused` with a
short code and a reason in Chinese and English; nothing here raises anything else.
"""

from __future__ import annotations

import json
import math
import operator
import re
from itertools import accumulate, count
from typing import Any

from scrm.errors import LianyiError

# A JSON string (escapes included) up to its closing quote, or up to the end of the line when it is unterminated.
_STRING = re.compile(rb'"[^"\\\n]*(?:\\.[^"\\\n]*)*"?')
_OPEN, _CLOSE = 2, 0  # each bracket becomes one byte: depth after k brackets = (sum of the first k) - k
_BRACKET_STEPS = bytes.maketrans(b"[{]}", bytes([_OPEN, _OPEN, _CLOSE, _CLOSE]))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Text no database here can store: NUL (PostgreSQL refuses it) and lone surrogates (not encodable as UTF-8).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class JsonRefused(LianyiError):
    """A JSON body refused before or while parsing: ``code`` for programs, ``zh``/``en`` for people."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.code, self.zh, self.en = code, zh, en


def json_depth(document: bytes) -> int:
    """The deepest nesting of arrays and objects in ``document`` (0 for a scalar), brackets inside strings ignored.

    Unbalanced brackets are counted as they come (the parser refuses them afterwards); no recursion."""
    brackets = _STRING.sub(b"", document).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(map(operator.sub, accumulate(brackets), count(1)), default=0)


def check_json_depth(document: bytes, max_depth: int, *, what: str = "body") -> None:
    """Refuse (``json_too_deep``) a document nested deeper than ``max_depth``."""
    depth = json_depth(document)
    if depth > max_depth:
        raise JsonRefused(
            "json_too_deep",
            f"JSON 嵌套过深：{depth} 层，最多 {max_depth} 层",
            f"{what} nests JSON {depth} deep; at most {max_depth} levels are accepted",
        )


def load_bounded_json(document: bytes | str, max_depth: int, *, what: str = "body") -> Any:
    """The value of a UTF-8 JSON ``document`` nested at most ``max_depth`` deep; :class:`JsonRefused` otherwise
    (``json_too_deep``, ``not_utf8``, ``bad_json``, ``unstorable_json``)."""
    raw = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    check_json_depth(raw, max_depth, what=what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRefused("not_utf8", "请求体不是 UTF-8 编码", f"{what} is not UTF-8") from None
    value = parse_json(text, what=what)
    require_storable(value, what=what)
    return value


def parse_json(text: str, *, what: str = "body") -> Any:
    """``json.loads`` with every parse failure as ``bad_json`` — including the ``ValueError`` of an integer longer
    than Python's 4,300-digit limit, which is not a ``JSONDecodeError``. Only for text already depth-checked."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"第 {exc.lineno} 行第 {exc.colno} 列"
        raise JsonRefused(
            "bad_json", f"JSON 格式错误（{where}）：{exc.msg}", f"{what} is not valid JSON: {exc}"
        ) from None
    except ValueError as exc:
        raise unparsable(exc, what=what) from None


def require_storable(value: Any, *, what: str = "body") -> None:
    """Refuse (``unstorable_json``) a parsed value holding what JSON allows but storage does not: a NUL character
    or a lone surrogate (``\\u0000``, ``\\ud800``) in a string or key, or NaN/Infinity (also ``1e400``). The walk
    uses its own stack, not recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and _UNSTORABLE_CHARACTER.search(item):
            raise JsonRefused(
                "unstorable_json",
                "JSON 字符串含无法保存的字符（NUL 或不成对的代理字符）",
                f"{what} holds a string with a NUL character or a lone surrogate",
            )
        elif isinstance(item, float) and not math.isfinite(item):
            raise JsonRefused(
                "unstorable_json",
                "JSON 含 NaN 或无穷大的数字",
                f"{what} holds a number that is NaN or infinite",
            )


def unparsable(exc: ValueError, *, what: str = "body") -> JsonRefused:
    """The refusal for a ``ValueError`` out of ``json.loads`` that is not a ``JSONDecodeError``."""
    return JsonRefused("bad_json", f"JSON 无法解析：{exc}", f"{what} is not valid JSON: {exc}")
