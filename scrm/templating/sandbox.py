"""The sandbox every customer-facing template runs in: Jinja2's immutable sandbox, spending the render budget of
:mod:`scrm.templating.budget` at every point where a template can loop, build text or call.

Only hooks Jinja2 documents for customising an environment are used: ``code_generator_class`` (every ``for``
iterates through :meth:`BudgetedSandbox.counted`, every buffer of a ``{% set %}`` block, macro or call block is a
:class:`TextBuffer`, every ``~`` goes through :meth:`BudgetedSandbox.joined`), ``template_class`` (``render``
streams the output under a fresh budget), ``intercepted_binops`` / ``call_binop`` (``*``, ``**``, ``+``, ``%`` are
sized before they run — which also stops Jinja2 from folding ``{{ 9 ** 9 ** 9 }}`` while compiling), ``call`` and
the ``range`` global. Filters are wrapped so a size argument cannot ask for gigabytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scrm.templating.budget import (
    BUILT_MAX_CHARS,
    INTEGER_BITS_MAX,
    RenderBudget,
    counted,
    render_streamed,
    spend_built,
    spend_steps,
    too_big_number,
    too_much_text,
)

COUNTED = "counted"  # the environment method every for loop iterates through
# filters that walk their value item by item in Python: every item is a step
ITERATING_FILTERS = frozenset(
    {"list", "sort", "map", "select", "reject", "selectattr", "rejectattr", "unique", "groupby", "batch", "slice"}
    | {"sum", "min", "max", "join"}
)
# filters that work through their text in Python (words, links, lines): a step per TEXT_CHARS_PER_STEP characters
TEXT_FILTERS = frozenset({"urlize", "wordwrap", "title", "wordcount", "pprint", "striptags"})
TEXT_CHARS_PER_STEP = 8
# filters and string methods whose number arguments are sizes (widths, counts): none may exceed BUILT_MAX_CHARS
SIZED_FILTERS = frozenset({"center", "indent", "truncate", "wordwrap", "batch", "slice", "format"})
SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_FORMAT_WIDTH = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")
_FORMAT_SPEC = re.compile(r":.*")
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")  # "{:{}}": the width is one of the arguments


class BudgetedCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with loops, buffers and ``~`` spending the render budget."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            already = isinstance(loop.iter, nodes.Call) and isinstance(loop.iter.node, nodes.EnvironmentAttribute)
            if not already:
                counter = nodes.EnvironmentAttribute(COUNTED, lineno=loop.iter.lineno)
                loop.iter = nodes.Call(counter, [loop.iter], [], None, None, lineno=loop.iter.lineno)
        super().visit_Template(node, frame)

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.text_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class TextBuffer(list[str]):
    """The output of a ``{% set %}`` block, macro or call block while it is built: every piece spends text."""

    def append(self, item: str) -> None:
        spend_built(len(item))
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        for item in items:
            self.append(item)


class BudgetedTemplate(Template):
    def render(self, *args: Any, **kwargs: Any) -> str:
        """The whole text, rendered under a fresh :class:`~scrm.templating.budget.RenderBudget`."""
        return render_streamed(self, dict(*args, **kwargs), RenderBudget())


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > INTEGER_BITS_MAX:
            raise too_big_number()
        return
    for sequence, times in ((left, right), (right, left)):
        size = _sized(sequence)
        if size is not None and isinstance(times, int):
            spend_built(size * max(times, 0))


def _check_power(base: Any, exponent: Any) -> None:
    numbers = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
    if numbers and exponent * abs(base).bit_length() > INTEGER_BITS_MAX:
        raise too_big_number()


def _check_widths(spec: str, pattern: re.Pattern[str]) -> None:
    for match in pattern.finditer(spec):
        for number in re.findall(r"\d+", match.group(0)):
            if int(number) > BUILT_MAX_CHARS:
                raise too_much_text()


def _check_numbers(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """No size argument may ask for more text than a whole render may build."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and abs(value) > BUILT_MAX_CHARS:
            raise too_much_text()


def _check_join(separator: Any, items: list[Any]) -> None:
    if isinstance(separator, str) and items:
        spend_built(len(separator) * (len(items) - 1))


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        spend_built(hits * (len(new) - len(old)))


def _check_str_method(owner: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Size a method call on a string before it runs; returns the arguments to use (a join's items listed)."""
    if name in SIZED_METHODS:
        _check_numbers(args, kwargs)
    if name == "join" and args:
        items = list(args[0])
        _check_join(owner, items)
        return (items, *args[1:])
    if name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    if name in ("format", "format_map"):
        for field in _BRACE_FIELD.finditer(owner):
            _check_widths(field.group(0), _FORMAT_SPEC)
        if _NESTED_FIELD.search(owner):
            mapped = [value for arg in args if isinstance(arg, Mapping) for value in arg.values()]
            _check_numbers((*args, *mapped), kwargs)
    return args


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a Jinja2 filter) spending steps for the items or text it walks, with its size arguments
    checked and its text result spent."""
    skip = 2 if getattr(function, "jinja_pass_arg", None) is not None else 1  # context, then the value

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        value, rest = (args[skip - 1] if len(args) >= skip else None), args[skip:]
        if name in SIZED_FILTERS:
            _check_numbers(rest, kwargs)
        if name in ITERATING_FILTERS and value is not None:
            value = counted(value)
            args = (*args[: skip - 1], value, *rest)
        elif name in TEXT_FILTERS and isinstance(value, str):
            spend_steps(len(value) // TEXT_CHARS_PER_STEP)
        if name == "join" and value is not None:
            items = list(value)
            _check_join(rest[0] if rest else kwargs.get("d", ""), items)
            args = (*args[: skip - 1], items, *rest)
        elif name == "replace" and len(rest) >= 2:
            _check_replace(value, rest[0], rest[1])
        elif name == "format" and isinstance(value, str):
            _check_widths(value, _FORMAT_WIDTH)  # a "*" width takes its number from the arguments checked above
        result = function(*args, **kwargs)
        if isinstance(result, str):
            spend_built(len(result))
        return result

    return bounded


def budgeted_range(*args: int) -> range:
    """``range`` that spends one step per number it will produce."""
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = BUILT_MAX_CHARS * BUILT_MAX_CHARS  # more than any budget
    spend_steps(size)
    return numbers


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox spending the render budget (see the module docstring)."""

    code_generator_class = BudgetedCodeGenerator
    template_class = BudgetedTemplate
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = budgeted_range
        self.filters = {name: bounded_filter(name, function) for name, function in self.filters.items()}

    def counted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        return counted(iterable)

    def text_buffer(self) -> TextBuffer:
        return TextBuffer()

    def joined(self, parts: Iterable[Any]) -> str:
        texts = [str(part) for part in parts]
        spend_built(sum(len(text) for text in texts))
        return "".join(texts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+" and _sized(left) is not None and _sized(right) is not None:
            spend_built(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_widths(left, _FORMAT_WIDTH)
            if "*" in left:  # "%*d": the width is one of the values
                _check_numbers(right if isinstance(right, tuple) else (right,), {})
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        spend_steps()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop(...): its items are steps too
            args = (counted(args[0]), *args[1:])
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(owner, getattr(target, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):
            spend_built(len(result))
        return result
