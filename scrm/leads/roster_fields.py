"""The roster's data (dealers and staff as read from a file), its problems, and the validation of one field.

Shared by the YAML and CSV readers: a value arrives raw (any YAML scalar, or a CSV cell string) and leaves as
what the ``dealers`` / ``staff`` column stores, or raises :class:`FieldProblem` with a Chinese message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scrm.errors import LianyiError
from scrm.leads.calendar import HoursError, OpeningHours
from scrm.leads.roster_answers import AnswersProblem, clean_answers
from scrm.models import StaffRole
from scrm.problems import did_you_mean

DEALER_CODE = re.compile(r"[A-Za-z0-9]{1,16}")  # the `state` grammar's dealer field (scrm.channel)
MAX_CAPACITY = 500
LIST_SPLIT = re.compile(r"[|、]")

ROLE_ALIASES: dict[str, str] = {
    "advisor": StaffRole.ADVISOR.value,
    "顾问": StaffRole.ADVISOR.value,
    "销售顾问": StaffRole.ADVISOR.value,
    "manager": StaffRole.MANAGER.value,
    "经理": StaffRole.MANAGER.value,
    "店长": StaffRole.MANAGER.value,
    "销售经理": StaffRole.MANAGER.value,
    "operator": StaffRole.OPERATOR.value,
    "运营": StaffRole.OPERATOR.value,
}
_TRUE = {"true", "yes", "y", "1", "是", "在职", "启用"}
_FALSE = {"false", "no", "n", "0", "否", "离职", "停用"}


@dataclass(frozen=True, slots=True)
class Where:
    """A position in a roster file: ``file:line`` (CSV, the physical line) or ``file:line:col`` (YAML)."""

    path: str
    line: int
    col: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.col is None else f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class RosterProblem:
    where: Where
    message: str  # Chinese, for operators
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.where} {'警告：' if self.warning else ''}{self.message}"


class RosterError(LianyiError):
    """A roster cannot be imported; ``problems`` lists every error with its position (nothing was written)."""

    def __init__(self, problems: list[RosterProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FieldProblem(LianyiError):
    """One bad value; ``offset`` is the 1-based character inside the value when known (opening hours)."""

    def __init__(self, message: str, offset: int | None = None, *, at: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.at = at  # the key inside a mapping value the problem is about (answers: the topic)


@dataclass(frozen=True)
class DealerEntry:
    code: str
    values: dict[str, Any]  # Dealer columns given in the file (absent ones are left as they are)
    where: Where


@dataclass(frozen=True)
class StaffEntry:
    userid: str
    values: dict[str, Any]  # Staff columns given in the file (without dealer_id)
    dealer_code: str | None
    where: Where
    dealer_where: Where | None = None


@dataclass(frozen=True)
class Roster:
    dealers: tuple[DealerEntry, ...] = ()
    staff: tuple[StaffEntry, ...] = ()
    files: tuple[str, ...] = field(default=())


# -- field cleaners ------------------------------------------------------------------------------------

Cleaner = Callable[[Any], Any]


def _text(limit: int, *, required: bool = False) -> Cleaner:
    def clean(raw: Any) -> str:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise FieldProblem("应为文字")
        if not isinstance(raw, str):
            raise FieldProblem(f'应为文字，数字请加引号（例如 "{raw}"，以免丢掉开头的 0）')
        value = raw.strip()
        if required and not value:
            raise FieldProblem("不能为空")
        if len(value) > limit:
            raise FieldProblem(f"最多 {limit} 个字符（现在 {len(value)} 个）")
        return value

    return clean


def _code(raw: Any) -> str:
    value: str = _text(16, required=True)(raw)
    if not DEALER_CODE.fullmatch(value):
        raise FieldProblem(f"门店代码 “{value}” 无效：只能是 1–16 位字母或数字")
    return value


def _items(raw: Any) -> list[str]:
    if isinstance(raw, str):
        parts = LIST_SPLIT.split(raw)
    elif isinstance(raw, list):
        if not all(isinstance(item, str) for item in raw):
            raise FieldProblem("列表中的每一项都应为文字")
        parts = raw
    else:
        raise FieldProblem("应为列表（YAML 列表，或用 | 、 分隔的文字）")
    return [part.strip() for part in parts if part.strip()]


def _hours(raw: Any) -> str:
    value: str = _text(256)(raw)
    try:
        OpeningHours.parse(value)
    except HoursError as exc:
        raise FieldProblem(exc.message, exc.column + (len(raw) - len(raw.lstrip()))) from None
    return value


def _answers(raw: Any) -> dict[str, str]:
    try:
        return clean_answers(raw)
    except AnswersProblem as exc:
        raise FieldProblem(
            exc.message, at=(exc.topic,) if exc.topic is not None and isinstance(raw, dict) else ()
        ) from None


def _role(raw: Any) -> str:
    value = _text(16, required=True)(raw)
    role = ROLE_ALIASES.get(value.lower())
    if role is None:
        guess = did_you_mean(value.lower(), ROLE_ALIASES)
        hint = f"（是否想写 {guess}？）" if guess else ""
        choices = "advisor（顾问/销售顾问）、manager（经理/店长/销售经理）、operator（运营）"
        raise FieldProblem(f"角色 “{value}” 无效{hint}，可选：{choices}")
    return role


def _capacity(raw: Any) -> int:
    if isinstance(raw, bool):
        raise FieldProblem(f"应为 0–{MAX_CAPACITY} 的整数")
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
        raw = int(raw)
    if not isinstance(raw, int):
        raise FieldProblem(f"“{raw}” 不是整数：应为 0–{MAX_CAPACITY} 的整数（同时跟进的线索数上限）")
    if not 0 <= raw <= MAX_CAPACITY:
        raise FieldProblem(f"{raw} 超出范围：应为 0–{MAX_CAPACITY}")
    return raw


def _active(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise FieldProblem(f"“{raw}” 无效：应为 true/false（或 是/否）")


# file field → (model column, cleaner); "code"/"userid" are the keys, "dealer" becomes dealer_id on import
DEALER_FIELDS: Mapping[str, tuple[str, Cleaner]] = {
    "code": ("code", _code),
    "name": ("name", _text(128)),
    "city": ("city", _text(64)),
    "region": ("region", _text(64)),
    "brands": ("brands", _items),
    "models": ("models", _items),
    "opening_hours": ("opening_hours", _hours),
    "hours": ("hours", _text(128)),
    "address": ("address", _text(256)),
    "phone": ("phone", _text(32)),
    "answers": ("answers", _answers),
}
STAFF_FIELDS: Mapping[str, tuple[str, Cleaner]] = {
    "userid": ("userid", _text(64, required=True)),
    "name": ("name", _text(128)),
    "dealer": ("dealer", _code),
    "role": ("role", _role),
    "duty_hours": ("duty_hours", _hours),
    "capacity": ("capacity", _capacity),
    "active": ("active", _active),
}
FIELDS: Mapping[str, Mapping[str, tuple[str, Cleaner]]] = {"dealers": DEALER_FIELDS, "staff": STAFF_FIELDS}
KIND_NAMES = {"dealers": "门店", "staff": "成员"}


def unknown_field_message(name: str, kind: str, what: str = "字段") -> str:
    """ "未知的字段 “nmae”（是否想写 name？）" with the choices of ``kind`` (dealers / staff)."""
    choices = FIELDS[kind]
    guess = did_you_mean(name, choices)
    hint = f"（是否想写 {guess}？）" if guess else f"，{KIND_NAMES[kind]}可用：{'、'.join(choices)}"
    return f"未知的{what} “{name}”{hint}"


def clean_value(kind: str, name: str, raw: Any) -> Any:
    """``raw`` validated as field ``name`` of ``kind``; raises :class:`FieldProblem`."""
    return FIELDS[kind][name][1](raw)


def build_dealer(values: Mapping[str, Any], where: Where) -> DealerEntry:
    code = values["code"]
    return DealerEntry(code=code, values={k: v for k, v in values.items() if k != "code"}, where=where)


def build_staff(values: Mapping[str, Any], where: Where, dealer_where: Where | None) -> StaffEntry:
    rest = {k: v for k, v in values.items() if k not in ("userid", "dealer")}
    return StaffEntry(values["userid"], rest, values.get("dealer"), where, dealer_where)


def combine(rosters: list[Roster]) -> tuple[Roster, list[RosterProblem]]:
    """One roster from several files, and a problem for every repeated dealer code or userid."""
    problems: list[RosterProblem] = []
    dealers: dict[str, DealerEntry] = {}
    staff: dict[str, StaffEntry] = {}
    for roster in rosters:
        for dealer in roster.dealers:
            first = dealers.setdefault(dealer.code, dealer)
            if first is not dealer:
                problems.append(RosterProblem(dealer.where, f"门店代码 {dealer.code} 重复（首次出现在 {first.where}）"))
        for member in roster.staff:
            seen = staff.setdefault(member.userid, member)
            if seen is not member:
                problems.append(RosterProblem(member.where, f"成员 {member.userid} 重复（首次出现在 {seen.where}）"))
    files = tuple(name for roster in rosters for name in roster.files)
    return Roster(tuple(dealers.values()), tuple(staff.values()), files), problems
