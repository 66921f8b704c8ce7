"""Read a CSV roster: a dealers table or a staff table, told apart by the header (``code`` or ``userid``).

UTF-8 with or without BOM. Headers may be the field names or their Chinese labels (门店代码, 姓名, 营业时间…).
An empty cell means "not given" (the stored value is left as it is). Problems are reported at ``file:line``,
the physical line where the record starts (a quoted cell may span lines).
"""

from __future__ import annotations

import csv
import io
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

HEADER_ALIASES: dict[str, dict[str, str]] = {
    "dealers": {
        "门店代码": "code",
        "经销商代码": "code",
        "代码": "code",
        "门店名称": "name",
        "名称": "name",
        "城市": "city",
        "大区": "region",
        "区域": "region",
        "品牌": "brands",
        "车型": "models",
        "营业时间": "opening_hours",
        "营业时间说明": "hours",
        "地址": "address",
        "电话": "phone",
        "话术": "answers",
        "门店答复": "answers",
    },
    "staff": {
        "成员账号": "userid",
        "企业微信账号": "userid",
        "账号": "userid",
        "姓名": "name",
        "门店代码": "dealer",
        "经销商代码": "dealer",
        "门店": "dealer",
        "角色": "role",
        "值班时间": "duty_hours",
        "容量": "capacity",
        "线索上限": "capacity",
        "在职": "active",
        "启用": "active",
    },
}
_KEYS = {"dealers": "code", "staff": "userid"}


def read_csv_roster(text: str, path: str) -> tuple[Roster, list[RosterProblem]]:
    """The entries of a CSV roster and the problems found (rows with a problem are left out)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    rows: list[tuple[int, list[str]]] = []
    previous_end = 0
    try:
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if any(cell.strip() for cell in row):
                rows.append((start, row))
    except csv.Error as exc:
        return Roster(files=(path,)), [RosterProblem(Where(path, reader.line_num), f"CSV 格式错误：{exc}")]
    if not rows:
        return Roster(files=(path,)), [RosterProblem(Where(path, 1), "文件为空：需要表头和至少一行数据")]
    header_line, header = rows[0]
    kind, columns, problems = _read_header(header, Where(path, header_line))
    if kind is None:
        return Roster(files=(path,)), problems
    if len(rows) == 1:
        problems.append(RosterProblem(Where(path, header_line), "只有表头，没有数据行"))
    dealers = []
    staff = []
    for line, row in rows[1:]:
        where = Where(path, line)
        before = len(problems)
        values: dict[str, Any] = {}
        extra = [cell for cell in row[len(columns) :] if cell.strip()]
        if extra:
            problems.append(RosterProblem(where, f"比表头多出 {len(row) - len(columns)} 列（文字中含逗号时请加引号）"))
        for name, cell in zip(columns, row, strict=False):
            if name is None or not cell.strip():
                continue
            try:
                values[FIELDS[kind][name][0]] = clean_value(kind, name, cell)
            except FieldProblem as exc:
                at = f"（第 {exc.offset} 个字符）" if exc.offset else ""
                problems.append(RosterProblem(where, f"{name}：{exc.message}{at}"))
        if _KEYS[kind] not in values and not any(p.message.startswith(f"{_KEYS[kind]}：") for p in problems[before:]):
            problems.append(RosterProblem(where, f"缺少 {_KEYS[kind]}"))
        if len(problems) > before:
            continue
        if kind == "dealers":
            dealers.append(build_dealer(values, where))
        else:
            staff.append(build_staff(values, where, where if "dealer" in values else None))
    return Roster(tuple(dealers), tuple(staff), (path,)), problems


def _read_header(header: list[str], where: Where) -> tuple[str | None, list[str | None], list[RosterProblem]]:
    """The table's kind and each column's field name (None for a problem column)."""
    names = [cell.strip() for cell in header]
    kind = None
    for candidate in ("staff", "dealers"):
        key = _KEYS[candidate]
        if any(_canonical(candidate, name) == key for name in names):
            kind = candidate
            break
    if kind is None:
        message = "无法判断是门店表还是成员表：表头需要含 code（门店代码）或 userid（成员账号）"
        return None, [], [RosterProblem(where, message)]
    problems: list[RosterProblem] = []
    columns: list[str | None] = []
    seen: set[str] = set()
    for name in names:
        field = _canonical(kind, name)
        if field not in FIELDS[kind]:
            problems.append(RosterProblem(where, unknown_field_message(name, kind, "列") if name else "表头有空列名"))
            columns.append(None)
        elif field in seen:
            problems.append(RosterProblem(where, f"列 {field}（{name}）重复"))
            columns.append(None)
        else:
            seen.add(field)
            columns.append(field)
    return kind, columns, problems


def _canonical(kind: str, name: str) -> str:
    return HEADER_ALIASES[kind].get(name, name.lower())
