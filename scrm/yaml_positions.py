"""YAML with positions: every key and value of an SOP file keeps its line and column.

:func:`parse_yaml` reads one document with PyYAML's composer (a SafeLoader without the timestamp resolver,
so ``2026-02-17`` stays a string and the data is JSON-serialisable) and returns the data with a
:class:`SourceMap`: path tuple such as ``("steps", 2, "private_message", "text")`` → (line, col), 1-based,
for keys and values. Syntax errors come back as :class:`YamlSyntaxError` with a Chinese message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scrm.errors import LianyiError
from scrm.problems import Loc


class SopYamlLoader(yaml.SafeLoader):
    """A SafeLoader whose implicit resolvers leave ``2026-02-17`` and ``2026-02-17 10:00`` as strings."""


SopYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# PyYAML's problem text → what an operator understands (the first matching fragment wins)
_YAML_PROBLEMS_CN: tuple[tuple[str, str], ...] = (
    ("mapping values are not allowed", "这里不能出现“键: 值”：检查缩进，或给含冒号的文字加引号"),
    ("found character '\\t'", "不能用 Tab 缩进，请改用空格"),
    ("found unexpected end of stream", "引号没有闭合"),
    ("could not find expected ':'", "缺少冒号“:”"),
    ("expected <block end>", "缩进不一致，或“- ”列表与字段混在同一层"),
    ("expected ',' or ']'", "方括号 [ ] 列表没有正确闭合"),
    ("expected ',' or '}'", "花括号 { } 没有正确闭合"),
    ("but found another document", "一个文件只能写一个模板（去掉多余的 ---）"),
    ("found undefined alias", "引用了未定义的锚点（*名称）"),
    ("found unhashable key", "字段名必须是文字"),
)


@dataclass(frozen=True, slots=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


ROOT = Mark(1, 1)


@dataclass
class SourceMap:
    """Where each value (and the key that names it) starts in a YAML file, by path such as
    ``("steps", 2, "private_message", "text")``."""

    values: dict[Loc, Mark] = field(default_factory=dict)
    keys: dict[Loc, Mark] = field(default_factory=dict)
    scalars: set[Loc] = field(default_factory=set)
    block_scalars: set[Loc] = field(default_factory=set)  # `|` / `>` values: content starts on the next line
    lines: list[str] = field(default_factory=list)  # the file's lines, for block scalar indentation

    def value(self, loc: Loc) -> Mark | None:
        return self.values.get(loc)

    def key(self, loc: Loc) -> Mark | None:
        return self.keys.get(loc)

    def locate(self, loc: Loc) -> Mark:
        """The deepest existing path of ``loc``: a scalar's value, else the key that opens the mapping or
        list (a list item: its first line)."""
        for end in range(len(loc), 0, -1):
            path = loc[:end]
            if path in self.values:
                if path in self.scalars or path not in self.keys:
                    return self.values[path]
                return self.keys[path]
        return ROOT

    def text_line(self, loc: Loc, template_line: int, template_col: int = 1) -> Mark:
        """The file position of line ``template_line``, column ``template_col`` (1-based) of the Jinja2 text
        stored at ``loc``. Column 1 of an inline value is where the value starts (its opening quote, if quoted)."""
        start = self.values.get(loc)
        if start is None or loc not in self.scalars:
            return self.locate(loc)
        shift = max(template_col, 1) - 1
        if loc not in self.block_scalars:
            if template_line > 1:
                return Mark(start.line + template_line - 1, 1 + shift)
            opening = self.lines[start.line - 1][start.col - 1 : start.col] if start.line <= len(self.lines) else ""
            quoted = shift > 0 and opening in ("'", '"')
            return Mark(start.line, start.col + shift + (1 if quoted else 0))
        line = start.line + template_line  # the block indicator's line, then the content
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return Mark(line, len(text) - len(text.lstrip(" ")) + 1 + shift)

    def for_error(self, loc: Loc, error_type: str, ctx: Mapping[str, Any] | None) -> Mark:
        """The best position for a pydantic error: an unknown key's own position, a ``key`` named by the
        error's context, the parent's key for a missing field, else the deepest existing path."""
        if error_type == "extra_forbidden" and loc in self.keys:
            return self.keys[loc]
        key = (ctx or {}).get("key")
        if isinstance(key, str):
            named = (*loc, *(int(part) if part.isdigit() else part for part in key.split(".")))
            if named in self.keys:
                return self.keys[named]
            if named in self.values:
                return self.values[named]
        if error_type == "missing":
            return self.locate(loc[:-1])
        return self.locate(loc)


@dataclass
class YamlDocument:
    data: Any
    source: SourceMap


class YamlSyntaxError(LianyiError):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _syntax_message(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    for fragment, message in _YAML_PROBLEMS_CN:
        if fragment in problem:
            return message
    return f"YAML 格式错误：{problem}"


def parse_yaml(text: str) -> tuple[YamlDocument, list[tuple[Mark, str]]]:
    """Parse one YAML document; returns it with its duplicate-key findings (position, message).

    Raises :class:`YamlSyntaxError` (with a Chinese message) when the text is not YAML."""
    loader = SopYamlLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        source = SourceMap(lines=text.splitlines())
        duplicates: list[tuple[Mark, str]] = []
        if node is not None:
            _index(loader, node, (), source, duplicates)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark is not None else ROOT
        raise YamlSyntaxError(where, _syntax_message(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(ROOT, _syntax_message(exc)) from None
    finally:
        loader.dispose()
    return YamlDocument(data, source), duplicates


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _index(loader: SopYamlLoader, node: Node, loc: Loc, source: SourceMap, dups: list[tuple[Mark, str]]) -> None:
    source.values[loc] = _mark(node)
    if isinstance(node, ScalarNode):
        source.scalars.add(loc)
        if node.style in ("|", ">"):
            source.block_scalars.add(loc)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _index(loader, item, (*loc, index), source, dups)
    elif isinstance(node, MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, ScalarNode):
                continue
            key = loader.construct_object(key_node)
            if key in seen:
                dups.append((_mark(key_node), f"字段 {key} 重复出现，后一个会覆盖前一个"))
            seen.add(key)
            child = (*loc, key)
            source.keys[child] = _mark(key_node)
            _index(loader, value_node, child, source, dups)
