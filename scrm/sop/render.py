"""Rendering SOP messages: a template bundle's Jinja2 text, its attachments and its ``when`` expressions.

Each bundle gets one sandboxed environment (:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`,
:class:`~jinja2.StrictUndefined`, no autoescape) over its message files; compiled templates are cached per
bundle version, so an edited template is compiled again and an unchanged one never is. Includes resolve
against the including file's folder first (``{% include "_greeting.j2" %}`` inside ``welcome/qr.j2`` is
``welcome/_greeting.j2``), then from the SOP folder root.

A message is inline ``text``, a ``file``, or ``by_channel`` (``<folder>/<channel>.j2``, else
``<folder>/default.j2``; a failing channel file falls back to ``default.j2``), plus attachments: the YAML
``attachments`` (their strings may use variables too) followed by those added with ``attach_link`` /
``attach_image`` / ``attach_miniprogram``, in WeCom's ``add_msg_template`` / ``send_welcome_msg`` shape.
With a link signer, link urls for a known contact become tracked links (source ``sop:<template id>``).

Every failure is a :class:`SopRenderError` with a stable ``code``, a Chinese message, the file (``None`` for
inline text), the template line, and ``loc``: where in the template YAML the failing source sits (e.g.
``("steps", 2, "private_message", "text")``), so the checker can point at ``file:line:col``.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scrm.errors import DomainError
from scrm.sop.context import AttachmentCollector, install_filters, link_attachment
from scrm.sop.spec import ATTACHMENTS_MAX, AdvisorTask, Attachment, Message, TemplateBundle

log = logging.getLogger(__name__)

TEXT_MAX_BYTES = 4000  # add_msg_template / send_welcome_msg text.content limit
INLINE = "<inline>"  # the code filename of inline text, so tracebacks tell it from files
DEFAULT_FILE = "default.j2"
_BUNDLE_CACHE_SIZE = 128

Loc = tuple[str | int, ...]
T = TypeVar("T")


class LinkWrapper(Protocol):
    """What :class:`scrm.links.LinkSigner` offers the renderer."""

    def wrap(self, url: str, *, corp_id: str, external_userid: str, source: str) -> str: ...


class SopRenderError(DomainError):
    """A message could not be rendered. ``code`` is stable: jinja_syntax, undefined_variable, unsafe_template,
    render_error, text_too_long, empty_message, missing_file, too_many_attachments."""

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


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """The text (stripped, ≤ 4000 bytes) and up to nine attachments in WeCom's shape."""

    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""  # advisor_task only: the card title
    file: str | None = None  # the message file used (None = inline text)


class _BundleEnvironment(ImmutableSandboxedEnvironment):
    def join_path(self, template: str, parent: str) -> str:
        folder = posixpath.dirname(parent)
        if folder and isinstance(self.loader, _BundleLoader):
            candidate = posixpath.normpath(posixpath.join(folder, template))
            if candidate in self.loader.files:
                return candidate
        return template


class _BundleLoader(BaseLoader):
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


def _syntax_error(exc: TemplateSyntaxError, file: str | None) -> SopRenderError:
    name = None if exc.filename == INLINE else (exc.filename or file)
    return SopRenderError("jinja_syntax", f"Jinja2 语法错误：{exc.message or exc}", name, exc.lineno)


class _CompiledBundle:
    """The environment and compiled templates of one bundle version (shared by its renderers)."""

    def __init__(self, bundle: TemplateBundle) -> None:
        self.files = dict(bundle.files)
        self.env = _BundleEnvironment(
            loader=_BundleLoader(self.files),
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
                raise _syntax_error(exc, None) from exc
            return self.env.template_class.from_code(self.env, code, self.env.make_globals(None))

        return _cached(self._inline, source, build)

    def file(self, name: str) -> Template:
        def build() -> Template:
            if name not in self.files:
                raise SopRenderError("missing_file", f"找不到消息文件 {name}", name)
            try:
                return self.env.get_template(name)
            except TemplateSyntaxError as exc:
                raise _syntax_error(exc, name) from exc
            except TemplateNotFound as exc:
                raise SopRenderError("missing_file", f"找不到被引用的文件 {exc.name}", name) from exc

        return _cached(self._files, name, build)

    def expression(self, source: str) -> Callable[..., Any]:
        def build() -> Callable[..., Any]:
            try:
                return self.env.compile_expression(source, undefined_to_none=False)
            except TemplateSyntaxError as exc:
                message_cn = f"when 表达式语法错误：{exc.message or exc}"
                raise SopRenderError("jinja_syntax", message_cn, None, exc.lineno) from exc

        return _cached(self._expressions, source, build)


def _cached(store: dict[str, T | SopRenderError], key: str, build: Callable[[], T]) -> T:
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


_compiled: OrderedDict[tuple[str, str], _CompiledBundle] = OrderedDict()


def _compiled_for(bundle: TemplateBundle) -> _CompiledBundle:
    key = (bundle.id, bundle.version)
    found = _compiled.get(key)
    if found is None:
        found = _compiled[key] = _CompiledBundle(bundle)
        while len(_compiled) > _BUNDLE_CACHE_SIZE:
            _compiled.popitem(last=False)
    else:
        _compiled.move_to_end(key)
    return found


def _run_failure(exc: Exception, file: str | None, files: Mapping[str, str]) -> SopRenderError:
    """Turn an exception raised while a template ran into a SopRenderError at the template's line."""
    if isinstance(exc, SopRenderError):
        return exc
    if isinstance(exc, TemplateSyntaxError):  # an included file that does not compile
        return _syntax_error(exc, file)
    where = _position(exc.__traceback__, files)
    name, line = (where[0], where[1]) if where else (file, None)
    if isinstance(exc, SecurityError):
        return SopRenderError("unsafe_template", f"模板访问了不安全的内容，已拒绝：{exc}", name, line)
    if isinstance(exc, UndefinedError):
        return SopRenderError("undefined_variable", _undefined_cn(exc.message or str(exc)), name, line)
    if isinstance(exc, TemplateNotFound):
        return SopRenderError("missing_file", f"找不到被引用的文件 {exc.name}", name, line)
    return SopRenderError("render_error", f"渲染失败：{type(exc).__name__}: {exc}", name, line)


class SopRenderer:
    """Renders the messages and evaluates the ``when`` expressions of one template bundle."""

    def __init__(self, bundle: TemplateBundle, *, links: LinkWrapper | None = None) -> None:
        self.bundle = bundle
        self.links = links
        self._compiled = _compiled_for(bundle)

    # ---- text ---------------------------------------------------------------------------------------------

    def _run(self, template: Template, file: str | None, context: Mapping[str, Any], extra: Mapping[str, Any]) -> str:
        try:
            return template.render({**context, **extra})
        except Exception as exc:  # the sandbox raises SecurityError, UndefinedError, TypeError, …
            raise _run_failure(exc, file, self._compiled.files) from exc

    def render_text(self, source: str, context: Mapping[str, Any]) -> str:
        """Render an inline template string (notify_staff text, a title …), stripped."""
        return self._run(self._compiled.inline(source), None, context, {}).strip()

    def channel_file(self, folder: str, channel: str) -> str:
        """The file ``by_channel: folder`` uses for ``channel``: its own file when present, else default.j2."""
        folder = folder.strip("/")
        if channel and "/" not in channel and channel[0] not in "._":
            name = f"{folder}/{channel}.j2"
            if name in self._compiled.files:
                return name
        return f"{folder}/{DEFAULT_FILE}"

    def _body(
        self, message: Message, context: Mapping[str, Any], channel: str, collector: AttachmentCollector
    ) -> tuple[str, str | None]:
        functions = collector.functions()
        if message.text:
            return self._run(self._compiled.inline(message.text), None, context, functions), None
        if message.file:
            name = message.file
            return self._run(self._compiled.file(name), name, context, functions), name
        if message.by_channel:
            name = self.channel_file(message.by_channel, channel)
            default = f"{message.by_channel.strip('/')}/{DEFAULT_FILE}"
            if name != default:
                try:
                    return self._run(self._compiled.file(name), name, context, functions), name
                except SopRenderError as exc:
                    log.error("SOP channel message failed, falling back to %s: %s", default, exc)
                    collector.items.clear()
            return self._run(self._compiled.file(default), default, context, functions), default
        return "", None

    # ---- attachments --------------------------------------------------------------------------------------

    def _field(self, value: str, context: Mapping[str, Any], loc: Loc) -> str:
        if "{" not in value:
            return value
        try:
            return self.render_text(value, context)
        except SopRenderError as exc:
            raise exc.at(loc) from exc

    def _yaml_attachment(self, item: Attachment, index: int, context: Mapping[str, Any]) -> dict[str, Any]:
        loc: Loc = ("attachments", index)
        if item.link is not None:
            link = item.link
            values = [
                self._field(getattr(link, k), context, (*loc, "link", k)) for k in ("title", "url", "desc", "picurl")
            ]
            return link_attachment(*values)
        if item.image is not None:
            image = {k: v for k, v in item.image.model_dump().items() if v}
            return {"msgtype": "image", "image": image}
        assert item.miniprogram is not None  # Attachment guarantees exactly one kind
        mini = item.miniprogram.model_dump()
        for key in ("title", "page"):
            mini[key] = self._field(mini[key], context, (*loc, "miniprogram", key))
        return {"msgtype": "miniprogram", "miniprogram": mini}

    def _track(self, attachment: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
        contact = context.get("contact")
        person = contact if isinstance(contact, Mapping) else {}
        external_userid = str(person.get("external_userid") or "")
        if self.links is None or attachment.get("msgtype") != "link" or not external_userid:
            return attachment
        link = dict(attachment["link"])
        link["url"] = self.links.wrap(
            link["url"],
            corp_id=str(person.get("corp_id") or context.get("corp_id") or ""),
            external_userid=external_userid,
            source=f"sop:{self.bundle.id}",
        )
        return {"msgtype": "link", "link": link}

    # ---- public -------------------------------------------------------------------------------------------

    def render(self, message: Message, context: Mapping[str, Any], *, channel: str = "") -> RenderedMessage:
        """Text and attachments of ``message``; ``channel`` (default: the contact's channel) picks the file of
        a ``by_channel`` message. Raises :class:`SopRenderError`."""
        if not channel:
            contact = context.get("contact")
            channel = str(contact.get("channel") or "") if isinstance(contact, Mapping) else ""
        collector = AttachmentCollector()
        source: Loc = (_source_key(message),)
        try:
            raw, file = self._body(message, context, channel, collector)
        except SopRenderError as exc:
            raise (exc if exc.loc else exc.at(source)) from exc
        text = raw.strip()
        attachments = [self._yaml_attachment(item, i, context) for i, item in enumerate(message.attachments)]
        attachments.extend(collector.items)
        if len(attachments) > ATTACHMENTS_MAX:
            count = len(attachments)
            message_cn = f"附件最多 {ATTACHMENTS_MAX} 个，这里有 {count} 个"
            raise SopRenderError("too_many_attachments", message_cn, file, loc=("attachments",))
        size = len(text.encode("utf-8"))
        if size > TEXT_MAX_BYTES:
            message_cn = f"正文 {size} 字节，超过 {TEXT_MAX_BYTES} 字节上限"
            raise SopRenderError("text_too_long", message_cn, file, loc=source)
        if not text and not attachments:
            raise SopRenderError("empty_message", "消息渲染后为空（没有正文也没有附件）", file, loc=source)
        title = ""
        if isinstance(message, AdvisorTask):
            title = self._field(message.title, context, ("title",)) or str(AdvisorTask.model_fields["title"].default)
        return RenderedMessage(text, [self._track(a, context) for a in attachments], title, file)

    def evaluate(self, expr: str, context: Mapping[str, Any]) -> bool:
        """The truth of a step's ``when`` expression. Raises :class:`SopRenderError`."""
        function = self._compiled.expression(expr)
        try:
            return bool(function(**context))
        except Exception as exc:
            raise _run_failure(exc, None, self._compiled.files) from exc

    def problems(self, context: Mapping[str, Any]) -> list[SopRenderError]:
        """Render every message (every file of a ``by_channel`` folder), notify_staff text and ``when`` of every
        step against ``context``; the errors found, each with ``loc`` from the template root."""
        found: list[SopRenderError] = []
        template = self.bundle.template
        for index, step in enumerate(template.steps):
            where: Loc = ("steps", index)
            if step.when is not None:
                try:
                    self.evaluate(step.when, context)
                except SopRenderError as exc:
                    found.append(exc.at((*where, "when")))
            if step.notify_staff is not None:
                try:
                    self.render_text(step.notify_staff.text, context)
                except SopRenderError as exc:
                    found.append(exc.at((*where, "notify_staff", "text")))
            message = step.message
            if message is None:
                continue
            prefix: Loc = (*where, step.action)
            channels = self._channels(message.by_channel) if message.by_channel else [""]
            for channel in channels:
                try:
                    self._render_exactly(message, context, channel)
                except SopRenderError as exc:
                    located = exc.at(prefix)
                    if not any(_same(located, seen) for seen in found):
                        found.append(located)
        return found

    def _render_exactly(self, message: Message, context: Mapping[str, Any], channel: str) -> RenderedMessage:
        """Like :meth:`render`, but a ``by_channel`` file is rendered on its own, never falling back."""
        if not message.by_channel or not channel:
            return self.render(message, context, channel=channel)
        name = self.channel_file(message.by_channel, channel)
        try:
            return self.render(message.model_copy(update={"by_channel": None, "file": name}), context)
        except SopRenderError as exc:
            if exc.loc[:1] != ("file",):
                raise
            raise SopRenderError(exc.code, exc.message_cn, exc.file, exc.line, loc=("by_channel",)) from exc

    def _channels(self, folder: str) -> list[str]:
        """The channels of a ``by_channel`` folder: its ``<channel>.j2`` files, partials excluded."""
        folder = folder.strip("/")
        names = (posixpath.basename(n) for n in self._compiled.files if posixpath.dirname(n) == folder)
        return sorted(n[:-3] for n in names if n.endswith(".j2") and n[0] not in "._") or [""]


def _same(one: SopRenderError, other: SopRenderError) -> bool:
    return str(one) == str(other) and one.loc == other.loc


def _source_key(message: Message) -> str:
    return "text" if message.text else "file" if message.file else "by_channel" if message.by_channel else "attachments"
