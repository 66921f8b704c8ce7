"""Static analysis of one Jinja2 text of an SOP or campaign: what ``sop check`` finds without rendering.

Syntax errors (SOP010, in Chinese at their column: :mod:`scrm.templating.syntax`), unknown filters and tests, unknown
variables (SOP009) and fields (SOP011, with a did-you-mean among the real fields — never a dict method), sandbox
escapes (SOP015: ``_``-attributes, ``attr`` tricks — refused even where rendering would never reach them) and
``attach_*`` calls over nine (SOP013).
"""

from __future__ import annotations

from collections.abc import Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
)

from scrm.problems import did_you_mean
from scrm.spec_fields import ATTACHMENTS_MAX
from scrm.templating.context import SAMPLE_NOW, VARIABLE_KEYS, VARIABLES, install_filters
from scrm.templating.sandbox import BudgetedSandbox
from scrm.templating.syntax import explain

ATTACH_FUNCTIONS = frozenset({"attach_link", "attach_image", "attach_miniprogram"})
UNSAFE_ATTRIBUTES = frozenset(
    {
        "mro",
        *UNSAFE_FUNCTION_ATTRIBUTES,
        *UNSAFE_METHOD_ATTRIBUTES,
        *UNSAFE_GENERATOR_ATTRIBUTES,
        *UNSAFE_COROUTINE_ATTRIBUTES,
        *UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    }
)

Finding = tuple[int, str, str]  # template line, code, message
PlacedFinding = tuple[int, int, str, str]  # template line, column, code, message


def _environment() -> BudgetedSandbox:
    env = BudgetedSandbox(undefined=StrictUndefined, autoescape=False)
    install_filters(env)
    return env


_ENV = _environment()
KNOWN_NAMES = frozenset({*VARIABLES, *ATTACH_FUNCTIONS, *_ENV.globals})


def _unsafe(node: nodes.Node) -> str | None:
    """Why ``node`` tries to leave the sandbox, or None."""
    if isinstance(node, nodes.Getattr) and (node.attr.startswith("_") or node.attr in UNSAFE_ATTRIBUTES):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
        if isinstance(key, str) and (key.startswith("_") or key in UNSAFE_ATTRIBUTES):
            return key
    if isinstance(node, nodes.Filter) and node.name == "attr":
        arg = node.args[0] if node.args else None
        if not isinstance(arg, nodes.Const):
            return "attr(…)"  # a computed attribute name could spell anything
        name = str(arg.value)
        if name.startswith("_") or name in UNSAFE_ATTRIBUTES:
            return name
    return None


def analyse(source: str, *, expression: bool = False, yaml_attachments: int = 0) -> list[Finding]:
    """Static findings in one Jinja2 text (``expression``: a ``when`` expression): (line, code, message)."""
    found = analyse_positioned(source, expression=expression, yaml_attachments=yaml_attachments)
    return [(line, code, message) for line, _col, code, message in found]


def analyse_positioned(
    source: str,
    *,
    expression: bool = False,
    yaml_attachments: int = 0,
    extra_variables: Mapping[str, frozenset[str]] | None = None,
) -> list[PlacedFinding]:
    """:func:`analyse` with the column in the text: (line, col, code, message). Only a syntax error has a column
    of its own (:mod:`scrm.templating.syntax`); every other finding is placed at column 1 of its line.
    ``extra_variables``: variables the caller adds to the SOP ones, with their fields (a campaign's ``campaign``)."""
    text = "{{ " + source + " }}" if expression else source
    try:
        tree = _ENV.parse(text)
        _ENV.compile(tree)  # unknown filters and tests fail here
    except TemplateSyntaxError as exc:
        where = explain(_ENV, text, exc)
        col = where.col
        if expression:  # the column inside the expression; past its end (it is incomplete): its start
            col = col - 3 if where.line == 1 and 3 < col <= len(source) + 3 else 1
        return [(where.line, col, "SOP010", where.text())]
    findings = _tree_findings(tree, yaml_attachments, extra_variables or {})
    return [(line, 1, code, message) for line, code, message in findings]


def _tree_findings(tree: nodes.Template, yaml_attachments: int, extra: Mapping[str, frozenset[str]]) -> list[Finding]:
    found: list[Finding] = []
    variables = VARIABLES | extra.keys()
    unsafe: dict[int, list[str]] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = _unsafe(node)
        if name is not None:
            unsafe.setdefault(node.lineno, []).insert(0, name)  # find_all yields the outer access first
    for line, names in sorted(unsafe.items()):
        found.append((line, "SOP015", f"模板不能访问 {'、'.join(dict.fromkeys(names))}（沙箱禁止，疑似注入）"))
    undeclared = find_undeclared_variables(tree)
    for variable in sorted(undeclared - KNOWN_NAMES - extra.keys()):
        line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == variable), 1)
        guess = did_you_mean(variable, variables)
        hint = f"，是不是 {guess}？" if guess else f"；可用变量：{'、'.join(sorted(variables))}"
        found.append((line, "SOP009", f"未知变量 {variable}{hint}"))
    for node in tree.find_all(nodes.Getattr):
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name in undeclared) or node.attr.startswith("_"):
            continue
        fields = extra.get(target.name) or _fields_of(target.name)
        if fields is not None and node.attr not in fields and node.attr not in _METHODS.get(target.name, ()):
            guess = did_you_mean(node.attr, fields)
            hint = f"，是不是 {guess}？" if guess else f"；可用字段：{'、'.join(sorted(fields))}"
            found.append((node.lineno, "SOP011", f"{target.name} 没有字段 {node.attr}{hint}"))
    calls = [n for n in tree.find_all(nodes.Call) if isinstance(n.node, nodes.Name) and n.node.name in ATTACH_FUNCTIONS]
    if calls and len(calls) + yaml_attachments > ATTACHMENTS_MAX:
        count = len(calls) + yaml_attachments
        found.append((calls[-1].lineno, "SOP013", f"附件最多 {ATTACHMENTS_MAX} 个，这里有 {count} 个"))
    return found


def _public(names: list[str]) -> frozenset[str]:
    return frozenset(n for n in names if not n.startswith("_"))


# what a variable offers besides its fields: dict methods (``contact.get("name")``), datetime methods
_METHODS: Mapping[str, frozenset[str]] = {
    **{name: _public(dir(dict)) for name in VARIABLE_KEYS},
    "now": _public([n for n in dir(SAMPLE_NOW) if callable(getattr(SAMPLE_NOW, n))]),
}
# ``now``'s fields: its data attributes (year … second, tzinfo), not its methods or the class limits
_NOW_FIELDS = frozenset({"year", "month", "day", "hour", "minute", "second", "microsecond", "tzinfo"})


def _fields_of(variable: str) -> frozenset[str] | None:
    """The real fields of a variable (what SOP011 suggests and lists), or None for an unknown variable."""
    if variable in VARIABLE_KEYS:
        return VARIABLE_KEYS[variable]
    if variable == "now":
        return _NOW_FIELDS
    return None
