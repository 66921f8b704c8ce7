"""Operator-edited YAML files validated by a pydantic model, with every problem reported at ``file:line:col``
in Chinese (intent.yaml, handoff.yaml…). SOP templates have their own richer loader in :mod:`scrm.sop.source`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from scrm.errors import LianyiError
from scrm.problems import error_message
from scrm.yaml_positions import YamlSyntaxError, parse_yaml

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RuleProblem:
    line: int  # 1-based
    col: int
    message: str  # Chinese, for operators


@dataclass(frozen=True, slots=True)
class RuleFile:
    """A rule file of the SOP folder that ``lianyi sop check`` validates beside the templates (intent.yaml,
    handoff.yaml…). Each feature declares its own; the process's services hand the list to the SOP checker."""

    name: str  # the file name inside the SOP folder
    code: str  # the problem code its problems are reported under
    load: Callable[[Path], object]  # reads and validates the file; raises ConfigFileError


class ConfigFileError(LianyiError):
    """A configuration file cannot be used; ``problems`` say where and why."""

    def __init__(self, path: Path | str, problems: list[RuleProblem]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}:{p.line}:{p.col} {p.message}" for p in problems))


def load_config(path: str | Path, model: type[M], error: type[ConfigFileError] = ConfigFileError) -> M:
    """Read ``path`` and validate it as ``model``; raises ``error`` with every problem and its position."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(target, [RuleProblem(1, 1, f"无法读取 {target.name}：{exc}")]) from None
    try:
        document, duplicates = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise error(target, [RuleProblem(exc.mark.line, exc.mark.col, exc.message)]) from None
    problems = [RuleProblem(mark.line, mark.col, message) for mark, message in duplicates]
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise error(target, [RuleProblem(1, 1, f"{target.name} 应是一个映射（字段: 值）")])
    loaded: M | None = None
    try:
        loaded = model.model_validate(data)
    except ValidationError as exc:
        for detail in exc.errors():
            mark = document.source.for_error(tuple(detail["loc"]), detail["type"], detail.get("ctx"))
            problems.append(RuleProblem(mark.line, mark.col, error_message(detail, model)))
    if problems or loaded is None:
        raise error(target, sorted(problems, key=lambda p: (p.line, p.col)))
    return loaded
