"""What one render of a customer-facing template may cost: steps, text and time.

A template is written by an operator, hot-reloaded into a running process and rendered on its event loop, so a
nested loop (``{% for i in range(100000) %}{% for j in range(100000) %}``) or a text bomb (``{{ "x" * 10**9 }}``)
must end in a precise refusal, quickly, never in a stalled process or a customer message of garbage. Every render
runs under a :class:`RenderBudget` (:func:`render_budget`); the sandbox (:mod:`scrm.templating.sandbox`) spends
it:

* **steps** (:data:`STEPS_MAX`): every item a ``{% for %}`` loop takes from its iterable (filtered-out items
  too, recursive ``loop(...)`` calls too), every number ``range()`` produces, every call the template makes, every
  item a filter such as ``sort`` or ``map`` walks, and every 8 characters ``urlize`` or ``wordwrap`` work through;
* **output** (:data:`OUTPUT_MAX_CHARS`): the characters the render returns, counted as they stream out, so the
  render stops at the chunk that crosses the limit (WeCom takes 4000 bytes of text anyway);
* **text built** (:data:`BUILT_MAX_CHARS`): every string the template builds on the way (``{% set %}`` blocks,
  macro bodies, ``~``, ``+``, ``*``, filter and method results), so no intermediate text grows unbounded;
* **time** (:data:`RENDER_SECONDS_MAX`): a wall-clock deadline checked at each of those points (nothing is
  interrupted from outside; a template cannot run long between two points without spending steps or text).

Spending past a limit raises :class:`RenderBudgetExceeded` inside the template, so the error carries the file
and line that was running (:func:`scrm.templating.compiled.run_failure`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from scrm.errors import LianyiError

STEPS_MAX = 10_000
OUTPUT_MAX_CHARS = 16_384
BUILT_MAX_CHARS = 131_072
RENDER_SECONDS_MAX = 0.5
INTEGER_BITS_MAX = 4_096  # ``**`` and ``*`` on integers: no number longer than this (a 1233-digit number)


class RenderBudgetExceeded(LianyiError):
    """A render went past one of its limits: ``kind`` is steps, output, built or time."""

    def __init__(self, kind: str, message_cn: str, message_en: str) -> None:
        self.kind = kind
        self.message_cn = message_cn
        self.message_en = message_en
        super().__init__(f"{message_en} ({message_cn})")

    def text(self) -> str:
        """Chinese first, then English, as operators see it (``sop check``, audit rows)."""
        return f"{self.message_cn}（render budget: {self.message_en}）"


def too_many_steps(limit: int = STEPS_MAX) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(
        "steps",
        f"模板执行步数超过上限 {limit}（循环的每一项、range 的每个数、每次调用各算一步），疑似循环过多",
        f"more than {limit} loop iterations, range items and calls",
    )


def too_much_output(limit: int = OUTPUT_MAX_CHARS) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(
        "output", f"模板输出超过 {limit} 个字符，已停止渲染", f"output longer than {limit} characters"
    )


def too_much_text(limit: int = BUILT_MAX_CHARS) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(
        "built",
        f"模板生成的中间文本超过 {limit} 个字符（字符串拼接、重复或过滤器结果过大），已停止渲染",
        f"more than {limit} characters of text built while rendering",
    )


def too_slow(seconds: float = RENDER_SECONDS_MAX) -> RenderBudgetExceeded:
    return RenderBudgetExceeded(
        "time", f"模板渲染超过 {seconds:g} 秒，已停止", f"rendering took longer than {seconds:g} seconds"
    )


def too_big_number(bits: int = INTEGER_BITS_MAX) -> RenderBudgetExceeded:
    return RenderBudgetExceeded("built", f"模板计算的数字过大（超过 {bits} 位二进制）", f"a number over {bits} bits")


@dataclass
class RenderBudget:
    """What is left of one render's limits (see the module docstring)."""

    steps: int = STEPS_MAX
    output: int = OUTPUT_MAX_CHARS
    built: int = BUILT_MAX_CHARS
    seconds: float = RENDER_SECONDS_MAX
    clock: Callable[[], float] = time.monotonic
    limits: tuple[int, int, int] = field(init=False)
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.limits = (self.steps, self.output, self.built)
        self.deadline = self.clock() + self.seconds

    def check_clock(self) -> None:
        if self.clock() > self.deadline:
            raise too_slow(self.seconds)

    def spend_steps(self, count: int = 1) -> None:
        self.steps -= count
        if self.steps < 0:
            raise too_many_steps(self.limits[0])
        self.check_clock()

    def spend_output(self, chars: int) -> None:
        self.output -= chars
        if self.output < 0:
            raise too_much_output(self.limits[1])
        self.check_clock()

    def spend_built(self, chars: int) -> None:
        self.built -= chars
        if self.built < 0:
            raise too_much_text(self.limits[2])
        self.check_clock()


_CURRENT: ContextVar[RenderBudget | None] = ContextVar("render_budget", default=None)


@contextmanager
def render_budget(budget: RenderBudget | None = None) -> Iterator[RenderBudget]:
    """Run the block under ``budget`` (a fresh default one when None); restores the enclosing budget after."""
    active = budget if budget is not None else RenderBudget()
    token = _CURRENT.set(active)
    try:
        yield active
    finally:
        _CURRENT.reset(token)


def current_budget() -> RenderBudget | None:
    return _CURRENT.get()


def spend_steps(count: int = 1) -> None:
    """Spend steps of the running render; outside one, only a single spend over the whole limit is refused."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.spend_steps(count)
    elif count > STEPS_MAX:
        raise too_many_steps()


def spend_built(chars: int) -> None:
    """Spend built text of the running render; outside one, only a single text over the whole limit is refused."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.spend_built(chars)
    elif chars > BUILT_MAX_CHARS:
        raise too_much_text()


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """``iterable``, spending one step per item taken."""
    for item in iterable:
        spend_steps()
        yield item


class StreamingTemplate(Protocol):
    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]: ...


def render_streamed(template: StreamingTemplate, variables: Mapping[str, Any], budget: RenderBudget) -> str:
    """Render ``template`` chunk by chunk under ``budget``. The chunk that crosses the output limit is refused
    inside the template (thrown into its generator), so the error names the file and line that produced it."""
    parts: list[str] = []
    with render_budget(budget):
        stream = template.generate(variables)
        try:
            for chunk in stream:
                try:
                    budget.spend_output(len(chunk))
                except RenderBudgetExceeded as exc:
                    cast(Generator[str, None, None], stream).throw(exc)  # Jinja raises it again, located
                    raise
                parts.append(chunk)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    return "".join(parts)
