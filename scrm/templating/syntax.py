"""Jinja2 syntax errors as operators read them: a Chinese message and the real line and column.

Jinja2 reports a syntax error with its line only, in English. :func:`explain` parses the text again with a
token stream that remembers where each token starts, so the column can be found: the offending token for
an unexpected token or an unknown tag (``{% iff %}`` → the tag name), the opener for something left open
(an ``{% if %}`` without ``{% endif %}``, a ``{{`` without ``}}``, a ``{#`` without ``#}``), the quote of an
unclosed string, and the enclosing ``{{`` / ``{%`` for an unknown filter or test. Lines and columns are
1-based and count characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import Environment, TemplateSyntaxError
from jinja2.lexer import Token, TokenStream
from jinja2.parser import Parser

from scrm.problems import did_you_mean

# Jinja2's names of tokens in its messages → what the operator typed
_TOKEN_WORDS: dict[str, str] = {
    "end of print statement": "}}",
    "end of statement block": "%}",
    "end of template": "模板结尾",
    "name": "名称",
    "string": "字符串",
    "integer": "数字",
    "float": "数字",
}
BLOCK_TAGS = frozenset({"if", "for", "macro", "call", "filter", "with", "block", "autoescape", "raw", "trans"})
KNOWN_TAGS = frozenset(
    {*BLOCK_TAGS, *(f"end{tag}" for tag in BLOCK_TAGS), "elif", "else", "set", "endset", "include", "import"}
    | {"from", "extends", "break", "continue", "do"}
)

_INNERMOST = r"innermost block that needs to be closed is '(\w+)'"
_UNCLOSED_BLOCK = re.compile(r"^Unexpected end of template\..*" + _INNERMOST, re.S)
_UNCLOSED_EXPRESSION = re.compile(
    r"^unexpected end of template, expected '(end of (?:print statement|statement block))'"
)
_UNKNOWN_TAG = re.compile(r"^Encountered unknown tag '(\w+)'\.(?:.*" + _INNERMOST + ")?", re.S)
_UNEXPECTED_CHAR = re.compile(r"^unexpected char (['\"])(.)\1 at (\d+)$", re.S)
_UNEXPECTED = re.compile(r"^unexpected '([^']+)'(?:, expected '([^']+)')?$")
_EXPECTED_TOKEN = re.compile(r"^expected token '([^']+)', got '([^']+)'$")
_EXPECTED_EXPRESSION = re.compile(r"^Expected an expression, got '([^']+)'$")
_NO_FILTER = re.compile(r"^No (filter|test) named '([^']+)'")


@dataclass(frozen=True, slots=True)
class SyntaxFinding:
    """A syntax error at ``line``:``col`` of the text (1-based) with its Chinese message."""

    line: int
    col: int
    message: str
    unknown_name: bool = False  # an unknown filter or test (a name, not the grammar)

    def text(self) -> str:
        """The message as ``sop check`` prints it: syntax errors say so first."""
        return self.message if self.unknown_name else f"Jinja2 语法错误：{self.message}"


def _word(token: str) -> str:
    return _TOKEN_WORDS.get(token, token)


class _Positions:
    """A token stream over ``source`` that keeps each token's start offset."""

    def __init__(self, env: Environment, source: str) -> None:
        self.env = env
        self.source = source
        self.tokens: list[tuple[Token, int]] = []
        self.lexer_stopped_at: int | None = None  # where the lexer refused the text (after the last token)
        self._last = 0

    def _raw(self) -> Iterator[tuple[int, str, str]]:
        cursor = 0
        try:
            for lineno, kind, value in self.env.lexer.tokeniter(self.source, None):
                found = self.source.find(value, cursor) if value else -1
                self._last = found if found >= 0 else cursor
                cursor = self._last + len(value) if found >= 0 else cursor
                yield lineno, kind, value
        except TemplateSyntaxError:
            rest = self.source[cursor:]
            self.lexer_stopped_at = cursor + len(rest) - len(rest.lstrip())
            raise

    def stream(self) -> TokenStream:
        def wrapped() -> Iterator[Token]:
            for token in self.env.lexer.wrap(self._raw()):
                self.tokens.append((token, self._last))
                yield token

        return TokenStream(wrapped(), None, None)

    def offset_of(self, token: Token) -> int | None:
        if token.type == "eof":
            return len(self.source)
        return next((offset for seen, offset in self.tokens if seen is token), None)

    def unclosed_block(self) -> int | None:
        """The ``{%`` of the innermost block tag still open at the end."""
        stack: list[tuple[str, int]] = []
        previous: tuple[Token, int] | None = None
        for token, offset in self.tokens:
            if previous is not None and previous[0].type == "block_begin" and token.type == "name":
                name = str(token.value)
                if name in BLOCK_TAGS:
                    stack.append((name, previous[1]))
                elif stack and name == f"end{stack[-1][0]}":
                    stack.pop()
            previous = (token, offset)
        return stack[-1][1] if stack else None

    def unclosed_opener(self, begin: str, end: str) -> int | None:
        """The last ``begin`` token (``{{`` or ``{%``) with no ``end`` after it."""
        found: int | None = None
        for token, offset in self.tokens:
            if token.type == begin:
                found = offset
            elif token.type == end:
                found = None
        return found


def explain(env: Environment, source: str, exc: TemplateSyntaxError) -> SyntaxFinding:
    """Where ``exc`` (raised parsing or compiling ``source`` in ``env``) is, and what it means in Chinese."""
    positions = _Positions(env, source)
    current: Token | None = None
    parser: Parser | None = None
    try:
        parser = Parser(env, source)  # lexes the first token: a lexer error there is raised here
        parser.stream = positions.stream()
        parser.parse()
    except TemplateSyntaxError:
        current = parser.stream.current if parser is not None else None
    message, offset = _message(env, exc.message or str(exc), positions, current)
    if offset is None:
        offset = _enclosing_tag(source, exc.lineno or 1, exc.message or "")
    return _finding(source, offset, exc.lineno or 1, message)


def _finding(source: str, offset: int | None, fallback_line: int, message: str) -> SyntaxFinding:
    unknown_name = message.startswith("没有名为")
    if offset is None or not 0 <= offset <= len(source):
        return SyntaxFinding(fallback_line, 1, message, unknown_name)
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return SyntaxFinding(line, col, message, unknown_name)


def _message(env: Environment, english: str, positions: _Positions, current: Token | None) -> tuple[str, int | None]:
    """The Chinese message and the offset it points at (None: find the enclosing tag of the error line)."""
    at_current = positions.lexer_stopped_at
    if at_current is None and current is not None:
        at_current = positions.offset_of(current)
    if match := _UNCLOSED_BLOCK.match(english):
        tag = match.group(1)
        return f"{{% {tag} %}} 没有关闭：模板结束前缺少 {{% end{tag} %}}", positions.unclosed_block()
    if match := _UNCLOSED_EXPRESSION.match(english):
        begin, end = ("{{", "}}") if match.group(1) == "end of print statement" else ("{%", "%}")
        kind = "variable" if begin == "{{" else "block"
        return f"{begin} 没有闭合：缺少 {end}", positions.unclosed_opener(f"{kind}_begin", f"{kind}_end")
    if english.startswith("Missing end of comment tag"):
        return "注释 {# 没有闭合：缺少 #}", _unclosed_comment(positions.source)
    if match := _UNKNOWN_TAG.match(english):
        return _unknown_tag(match.group(1), match.group(2)), at_current
    if match := _UNEXPECTED_CHAR.match(english):
        char, offset = match.group(2), int(match.group(3))
        if char in "'\"":
            return f"字符串没有闭合：缺少配对的引号 {char}", offset
        return f"这里不能使用字符 {char}", offset
    if match := _UNEXPECTED.match(english):
        expected = f"，应为 {_word(match.group(2))}" if match.group(2) else ""
        return f"这里不应出现 {_word(match.group(1))}{expected}", at_current
    if match := _EXPECTED_TOKEN.match(english):
        return f"这里应为 {_word(match.group(1))}，却是 {_word(match.group(2))}", at_current
    if match := _EXPECTED_EXPRESSION.match(english):
        return f"这里缺少表达式（变量或值），却是 {_word(match.group(1))}", at_current
    if english.startswith("tag name expected"):
        return "{% 后缺少标签名（如 if、for、set）", at_current
    if match := _NO_FILTER.match(english):
        what, name = match.groups()
        known = env.filters if what == "filter" else env.tests
        label = "过滤器" if what == "filter" else "测试"
        guess = did_you_mean(name, known)
        return f"没有名为 {name} 的{label}" + (f"，是不是 {guess}？" if guess else ""), None
    return f"Jinja2 语法错误（{english}）", at_current


def _unknown_tag(name: str, innermost: str | None) -> str:
    if innermost is not None:
        return f"{{% {name} %}} 与前面的 {{% {innermost} %}} 不配对：应先用 {{% end{innermost} %}} 关闭它"
    if name.startswith("end") or name in ("elif", "else"):
        return f"多余的 {{% {name} %}}：前面没有与它配对的开始标签"
    guess = did_you_mean(name, KNOWN_TAGS)
    return f"未知标签 {{% {name} %}}" + (f"，是不是 {guess}？" if guess else "")


def _unclosed_comment(source: str) -> int | None:
    start = source.rfind("{#")
    while start >= 0 and source.find("#}", start) >= 0:
        start = source.rfind("{#", 0, start)
    return start if start >= 0 else None


def _enclosing_tag(source: str, lineno: int, english: str) -> int | None:
    """The ``{{``/``{%`` around an unknown filter or test on line ``lineno`` (None when not found)."""
    match = _NO_FILTER.match(english)
    lines = source.split("\n")
    if match is None or not 0 < lineno <= len(lines):
        return None
    text = lines[lineno - 1]
    word = r"\|\s*" if match.group(1) == "filter" else r"\bis\s+(?:not\s+)?"
    use = re.search(word + re.escape(match.group(2)) + r"\b", text)
    if use is None:
        return None
    opener = max(text.rfind("{{", 0, use.start()), text.rfind("{%", 0, use.start()))
    line_start = sum(len(line) + 1 for line in lines[: lineno - 1])
    return line_start + (opener if opener >= 0 else use.start())
