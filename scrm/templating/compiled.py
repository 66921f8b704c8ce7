"""Compiled message templates: one sandboxed Jinja2 environment per template bundle (an SOP template with its
message files), its loader, a bounded cache of compiled bundles, and the errors (with template file and line)
rendering produces. :mod:`scrm.sop.render` renders SOP messages with these; campaigns use the same errors."""

from __future__ import annotations

import logging
import posixpath
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar

from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.exceptions import SecurityError

from scrm.errors import DomainError
from scrm.templating.budget import RenderBudgetExceeded
from scrm.templating.context import install_filters
from scrm.templating.sandbox import BudgetedSandbox
from scrm.templating.syntax import explain

log = logging.getLogger(__name__)
_PLAIN = BudgetedSandbox()  # for locating a syntax error when no environment is given

INLINE = "<inline>"  # the code filename of inline text, so tracebacks tell it from files
BUNDLE_CACHE_SIZE = 128

Loc = tuple[str | int, ...]
T = TypeVar("T")


class TemplateFiles(Protocol):
    """A versioned set of message files (an SOP template bundle)."""

    @property
    def id(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def files(self) -> Mapping[str, str]: ...


class SopRenderError(DomainError):
    """A message could not be rendered. ``code`` is stable: jinja_syntax, undefined_variable, unsafe_template,
    render_error, text_too_long, empty_message, missing_file, too_many_attachments, over_budget."""

    def __init__(
        self, code: str, message_cn: str, file: str | None = None, line: int | None = None, *, loc: Loc = ()
    ) -> None:
        self.code = code
        self.message_cn = message_cn
        self.file = file
        self.line = line
        self.loc = loc
        where = f"{file or INLINE}:{line}" if line else (file or INLINE)
        super().__init__(f"{where}: {code} {message_cn}")

    def at(self, prefix: Loc) -> SopRenderError:
        """The same error placed under ``prefix`` (e.g. the step and action a message belongs to)."""
        return SopRenderError(self.code, self.message_cn, self.file, self.line, loc=(*prefix, *self.loc))


class BundleEnvironment(BudgetedSandbox):
    def join_path(self, template: str, parent: str) -> str:
        folder = posixpath.dirname(parent)
        if folder and isinstance(self.loader, BundleLoader):
            candidate = posixpath.normpath(posixpath.join(folder, template))
            if candidate in self.loader.files:
                return candidate
        return template


class BundleLoader(BaseLoader):
    """The bundle's message files; each template carries its name as filename, so tracebacks name it."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self.files:
            raise TemplateNotFound(template)
        return self.files[template], template, lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.files)


def _position(tb: TracebackType | None, names: Mapping[str, str]) -> tuple[str | None, int] | None:
    """File (None = inline) and line of the innermost traceback frame Jinja attributed to a bundle template."""
    found: tuple[str | None, int] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == INLINE:
            found = (None, tb.tb_lineno)
        elif filename in names:
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_MISSING_ATTRIBUTE = re.compile(r"has no (?:attribute|element) '?([^']+?)'?$")


def _undefined_cn(message: str) -> str:
    """Jinja2's undefined-variable message in Chinese, keeping the name that was not found."""
    if match := _UNDEFINED_NAME.match(message):
        return f"变量 {match.group(1)} 未定义"
    if match := _MISSING_ATTRIBUTE.search(message):
        return f"没有这个字段：{match.group(1)}（{message}）"
    return f"变量未定义：{message}"


def syntax_error(exc: TemplateSyntaxError, file: str | None, env: Environment | None = None) -> SopRenderError:
    """A syntax error in Chinese at its real line (:func:`scrm.templating.syntax.explain`), when the source is known."""
    name = None if exc.filename == INLINE else (exc.filename or file)
    if exc.source is None:
        return SopRenderError("jinja_syntax", f"Jinja2 语法错误（{exc.message or exc}）", name, exc.lineno)
    where = explain(env or _PLAIN, exc.source, exc)
    return SopRenderError("jinja_syntax", where.text(), name, where.line)


class CompiledBundle:
    """The environment and compiled templates of one bundle version (shared by its renderers)."""

    def __init__(self, bundle: TemplateFiles) -> None:
        self.files = dict(bundle.files)
        self.env = BundleEnvironment(
            loader=BundleLoader(self.files),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=False,
            cache_size=-1,
        )
        install_filters(self.env)
        self._inline: dict[str, Template | SopRenderError] = {}
        self._files: dict[str, Template | SopRenderError] = {}
        self._expressions: dict[str, Callable[..., Any] | SopRenderError] = {}

    def inline(self, source: str) -> Template:
        def build() -> Template:
            try:
                code = self.env.compile(source, filename=INLINE)
            except TemplateSyntaxError as exc:
                raise syntax_error(exc, None, self.env) from exc
            return self.env.template_class.from_code(self.env, code, self.env.make_globals(None))

        return cached(self._inline, source, build)

    def file(self, name: str) -> Template:
        def build() -> Template:
            if name not in self.files:
                raise SopRenderError("missing_file", f"找不到消息文件 {name}", name)
            try:
                return self.env.get_template(name)
            except TemplateSyntaxError as exc:
                raise syntax_error(exc, name, self.env) from exc
            except TemplateNotFound as exc:
                raise SopRenderError("missing_file", f"找不到被引用的文件 {exc.name}", name) from exc

        return cached(self._files, name, build)

    def expression(self, source: str) -> Callable[..., Any]:
        def build() -> Callable[..., Any]:
            try:
                return self.env.compile_expression(source, undefined_to_none=False)
            except TemplateSyntaxError as exc:
                where = explain(self.env, "{{ " + source + " }}", exc)
                raise SopRenderError("jinja_syntax", f"when 表达式语法错误：{where.message}", None, where.line) from exc

        return cached(self._expressions, source, build)


def cached(store: dict[str, T | SopRenderError], key: str, build: Callable[[], T]) -> T:
    """``build()`` once per key; a failure is cached too and raised again on every use."""
    found = store.get(key)
    if found is None:
        try:
            found = build()
        except SopRenderError as exc:
            found = exc
        store[key] = found
    if isinstance(found, SopRenderError):
        raise found
    return found


class CompiledBundles:
    """The compiled bundles of one process, least recently used first out (at most ``size``): a bundle version
    is compiled once however many renderers use it. Owned by the process's services, never a global."""

    def __init__(self, size: int = BUNDLE_CACHE_SIZE) -> None:
        self.size = size
        self._bundles: OrderedDict[tuple[str, str], CompiledBundle] = OrderedDict()

    def get(self, bundle: TemplateFiles) -> CompiledBundle:
        key = (bundle.id, bundle.version)
        found = self._bundles.get(key)
        if found is None:
            found = self._bundles[key] = CompiledBundle(bundle)
            while len(self._bundles) > self.size:
                self._bundles.popitem(last=False)
        else:
            self._bundles.move_to_end(key)
        return found

    def __len__(self) -> int:
        return len(self._bundles)


def run_failure(exc: Exception, file: str | None, files: Mapping[str, str]) -> SopRenderError:
    """Turn an exception raised while a template ran into a SopRenderError at the template's line."""
    if isinstance(exc, SopRenderError):
        return exc
    if isinstance(exc, TemplateSyntaxError):  # an included file that does not compile
        return syntax_error(exc, file)
    where = _position(exc.__traceback__, files)
    name, line = (where[0], where[1]) if where else (file, None)
    if isinstance(exc, RenderBudgetExceeded):
        return SopRenderError("over_budget", exc.text(), name, line)
    if isinstance(exc, SecurityError):
        return SopRenderError("unsafe_template", f"模板访问了不安全的内容，已拒绝：{exc}", name, line)
    if isinstance(exc, UndefinedError):
        return SopRenderError("undefined_variable", _undefined_cn(exc.message or str(exc)), name, line)
    if isinstance(exc, TemplateNotFound):
        return SopRenderError("missing_file", f"找不到被引用的文件 {exc.name}", name, line)
    return SopRenderError("render_error", f"渲染失败：{type(exc).__name__}: {exc}", name, line)
