"""Read a YAML roster (``dealers:`` and/or ``staff:`` lists) with every problem at ``file:line:col``."""

from __future__ import annotations

from typing import Any

from scrm.leads.roster_fields import (
    FIELDS,
    FieldProblem,
    Roster,
    RosterProblem,
    Where,
    build_dealer,
    build_staff,
    clean_value,
    unknown_field_message,
)
from scrm.problems import did_you_mean
from scrm.yaml_positions import Mark, SourceMap, YamlSyntaxError, parse_yaml

_KEYS = {"dealers": "code", "staff": "userid"}


def read_yaml_roster(text: str, path: str) -> tuple[Roster, list[RosterProblem]]:
    """The entries of a YAML roster and the problems found (entries with a problem are left out)."""
    try:
        document, duplicates = parse_yaml(text)
    except YamlSyntaxError as exc:
        return Roster(files=(path,)), [RosterProblem(Where(path, exc.mark.line, exc.mark.col), exc.message)]
    source = document.source
    problems = [RosterProblem(Where(path, m.line, m.col), message) for m, message in duplicates]
    data = document.data
    if data is None:
        return Roster(files=(path,)), [
            RosterProblem(Where(path, 1, 1), "文件为空：需要 dealers（门店）或 staff（成员）列表")
        ]
    if not isinstance(data, dict):
        return Roster(files=(path,)), [
            RosterProblem(Where(path, 1, 1), "文件应是一个映射，含 dealers: 和/或 staff: 列表")
        ]
    for key in data:
        if key not in _KEYS:
            guess = did_you_mean(str(key), _KEYS)
            hint = f"（是否想写 {guess}？）" if guess else "，只能是 dealers 或 staff"
            problems.append(
                RosterProblem(_at(path, source.key((key,)) or source.locate((key,))), f"未知的字段 “{key}”{hint}")
            )
    dealers = []
    staff = []
    for kind in _KEYS:
        if kind not in data or data[kind] is None:
            continue
        items = data[kind]
        if not isinstance(items, list):
            problems.append(
                RosterProblem(_at(path, source.locate((kind,))), f"{kind} 应是一个列表（每项以 “- ” 开头）")
            )
            continue
        for index, item in enumerate(items):
            entry = _read_item(kind, index, item, path, source, problems)
            if entry is None:
                continue
            values, where, dealer_where = entry
            if kind == "dealers":
                dealers.append(build_dealer(values, where))
            else:
                staff.append(build_staff(values, where, dealer_where))
    if not dealers and not staff and not problems:
        problems.append(RosterProblem(Where(path, 1, 1), "文件中没有任何门店或成员"))
    return Roster(tuple(dealers), tuple(staff), (path,)), problems


def _read_item(
    kind: str, index: int, item: Any, path: str, source: SourceMap, problems: list[RosterProblem]
) -> tuple[dict[str, Any], Where, Where | None] | None:
    where = _at(path, source.locate((kind, index)))
    if not isinstance(item, dict):
        problems.append(RosterProblem(where, "每一项应是一个映射（字段: 值）"))
        return None
    before = len(problems)
    values: dict[str, Any] = {}
    for name, raw in item.items():
        loc = (kind, index, name)
        if name not in FIELDS[kind]:
            problems.append(
                RosterProblem(_at(path, source.key(loc) or where_mark(where)), unknown_field_message(str(name), kind))
            )
            continue
        if raw is None:
            continue  # `field:` with no value = not given
        try:
            values[FIELDS[kind][name][0]] = clean_value(kind, name, raw)
        except FieldProblem as exc:
            inner = source.key((*loc, *exc.at)) if exc.at else None  # the key inside the value (answers' topic)
            where = _at(path, inner) if inner else _value_at(path, source, loc, exc.offset)
            problems.append(RosterProblem(where, f"{name}：{exc.message}"))
    key = _KEYS[kind]
    if key not in item or item[key] is None:
        problems.append(RosterProblem(where, f"缺少 {key}"))
    if len(problems) > before:
        return None
    dealer_mark = source.value((kind, index, "dealer"))
    return values, where, _at(path, dealer_mark) if dealer_mark else None


def where_mark(where: Where) -> Mark:
    return Mark(where.line, where.col or 1)


def _at(path: str, mark: Mark) -> Where:
    return Where(path, mark.line, mark.col)


def _value_at(path: str, source: SourceMap, loc: tuple[str | int, ...], offset: int | None) -> Where:
    """The value's position; with ``offset``, the character inside a one-line (plain or quoted) scalar."""
    mark = source.value(loc) or source.locate(loc)
    if offset is None or loc in source.block_scalars:
        return _at(path, mark)
    line = source.lines[mark.line - 1] if 0 < mark.line <= len(source.lines) else ""
    quoted = line[mark.col - 1 : mark.col] in ("'", '"')
    return Where(path, mark.line, mark.col + offset - 1 + (1 if quoted else 0))
