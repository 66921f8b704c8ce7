"""A problem found in an operator-edited file (SOP folder, policy, tags, intent and handoff rules, campaigns), the
table of stable problem codes, and Chinese messages for validation errors.

Codes are part of the operator interface (``lianyi sop check`` prints them and the README lists them):
never renumber one, only add. :mod:`scrm.sop.check` documents the table with an example per code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]

# code → what it means (English, for the docs and logs; operator messages are Chinese)
CODES: Mapping[str, str] = {
    "SOP001": "YAML syntax error, or the file is not one mapping",
    "SOP002": "unknown key (with a did-you-mean)",
    "SOP003": "missing required key or filter",
    "SOP004": "bad value, type or choice",
    "SOP005": "bad duration",
    "SOP006": "bad cron expression",
    "SOP007": "bad time of day, weekday or date",
    "SOP008": "tag not in tags.yaml, or ambiguous",
    "SOP009": "unknown template variable",
    "SOP010": "Jinja2 syntax error",
    "SOP011": "undefined attribute or value when rendering the sample context",
    "SOP012": "text over 4000 bytes (UTF-8) after rendering",
    "SOP013": "more than 9 attachments",
    "SOP014": "step or schedule that can only ever fall in quiet hours",
    "SOP015": "unsafe template (sandbox escape attempt)",
    "SOP016": "duplicate template id or step id",
    "SOP017": "start_sop names no template of the folder",
    "SOP018": "step action or timing problem",
    "SOP019": "message file missing, unreadable or outside the SOP folder",
    "SOP020": "bad regular expression",
    "SOP021": "key not allowed for this kind or event",
    "SOP022": "policy.yaml problem",
    "SOP023": "trigger shape (event, cron or dates)",
    "SOP024": "message shape (text/file/by_channel, attachments, empty message)",
    "SOP025": "duplicate YAML key",
    "SOP026": "tags.yaml problem",
    "SOP027": "intent.yaml problem",
    "SOP028": "handoff.yaml problem",
    "SOP029": "template over its render budget (loop steps, output size, text built, time)",
}

# pydantic error type (built-in, or the codes raised by scrm.sop.spec) → problem code; anything else: SOP004
ERROR_TYPE_CODES: Mapping[str, str] = {
    "extra_forbidden": "SOP002",
    "missing": "SOP003",
    "missing_filter": "SOP003",
    "bad_duration": "SOP005",
    "bad_cron": "SOP006",
    "bad_time": "SOP007",
    "bad_weekday": "SOP007",
    "bad_date": "SOP007",
    "too_many_attachments": "SOP013",
    "duplicate_step": "SOP016",
    "step_action": "SOP018",
    "step_timing": "SOP018",
    "bad_regex": "SOP020",
    "filter_not_allowed": "SOP021",
    "kind_mismatch": "SOP021",
    "trigger_shape": "SOP023",
    "message_source": "SOP024",
    "bad_attachment": "SOP024",
}

# scrm.sop.render error code → problem code
RENDER_ERROR_CODES: Mapping[str, str] = {
    "jinja_syntax": "SOP010",
    "undefined_variable": "SOP011",
    "text_too_long": "SOP012",
    "too_many_attachments": "SOP013",
    "unsafe_template": "SOP015",
    "missing_file": "SOP019",
    "empty_message": "SOP024",
    "render_error": "SOP011",
    "over_budget": "SOP029",
}


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One finding; ``str()`` is the ``path:line:col code message`` line the CLI prints (1-based)."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col} {self.code} {self.message}"


# ---- pydantic errors → problems ---------------------------------------------------------------------------


def _field_name(loc: Loc) -> str:
    names = [part for part in loc if isinstance(part, str)]
    return names[-1] if names else "模板"


def _model_at(loc: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model whose fields may appear at ``loc`` (a path into a ``root`` document), or None."""
    model: type[BaseModel] = root
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return None
        found = _model_in(info.annotation)
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(loc: Loc, root: type[BaseModel]) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1], root)
    fields = sorted(model.model_fields) if model is not None else []
    guess = did_you_mean(key, fields)
    if guess:
        return f"未知字段 {key}，是不是 {guess}？"
    if fields:
        return f"未知字段 {key}，可用字段：{'、'.join(fields)}"
    return f"未知字段 {key}"


def _choices(expected: Any) -> str:
    return str(expected).replace("' or '", "'、'").replace("', '", "'、'")


def error_code(error: ErrorDetails) -> str:
    """The problem code of one pydantic error of :class:`~scrm.sop.spec.SopTemplate`."""
    return ERROR_TYPE_CODES.get(error["type"], "SOP004")


def error_message(error: ErrorDetails, root: type[BaseModel], patterns: Mapping[str, str] | None = None) -> str:
    """A Chinese message for one pydantic error (custom errors of the spec already carry one); ``root`` is the
    model of the whole document (unknown keys are matched against its fields); ``patterns`` describes the
    document's own string patterns in words (regex source → Chinese)."""
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    name = _field_name(loc)
    value = error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind == "missing":
        return f"缺少必填字段 {name}"
    if kind == "unknown_event":
        guess = did_you_mean(str(value), ctx.get("choices") or ())
        return (
            f"{error['msg']}，是不是 {guess}？"
            if guess
            else f"{error['msg']}，可选：{'、'.join(ctx.get('choices') or ())}"
        )
    if kind not in _BUILTIN_MESSAGES:
        return error["msg"] if kind in ERROR_TYPE_CODES or not kind.islower() else f"{name}：{error['msg']}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        described = {**_PATTERNS_CN, **(patterns or {})}.get(pattern)
        ctx = {"pattern": described or f"应符合 {pattern}"}
    return _BUILTIN_MESSAGES[kind].format(name=name, value=value, **{k: _choices(v) for k, v in ctx.items()})


# common patterns in words (a document adds its own through ``patterns``)
_PATTERNS_CN: Mapping[str, str] = {
    r"^https?://": "应以 http:// 或 https:// 开头",
    r"^[a-z0-9][a-z0-9_-]{0,63}$": "只能用小写字母、数字、_ 和 -，以字母或数字开头，最多 64 个字符",  # campaign code
}


_BUILTIN_MESSAGES: Mapping[str, str] = {
    "string_type": "{name} 应为文字",
    "string_too_short": "{name} 不能为空",
    "string_too_long": "{name} 最多 {max_length} 个字符",
    "string_pattern_mismatch": "{name} 的格式不对：{value}（{pattern}）",
    "int_type": "{name} 应为整数",
    "int_parsing": "{name} 应为整数，这里是 {value}",
    "int_from_float": "{name} 应为整数，这里是 {value}",
    "bool_type": "{name} 应为 true 或 false",
    "bool_parsing": "{name} 应为 true 或 false，这里是 {value}",
    "literal_error": "{name} 的取值无效：{value}，可选 {expected}",
    "enum": "{name} 的取值无效：{value}，可选 {expected}",
    "greater_than_equal": "{name} 不能小于 {ge}",
    "less_than_equal": "{name} 不能大于 {le}",
    "too_short": "{name} 至少需要 {min_length} 项",
    "too_long": "{name} 最多 {max_length} 项",
    "list_type": "{name} 应为列表",
    "model_type": "{name} 应为“字段: 值”的映射",
    "model_attributes_type": "{name} 应为“字段: 值”的映射",
    "dict_type": "{name} 应为“字段: 值”的映射",
    "frozen_set_type": "{name} 应为列表",
}
