"""Rendering SOP messages: a template bundle's Jinja2 text, its attachments and its ``when`` expressions.

Each bundle gets one sandboxed environment (:class:`~scrm.templating.sandbox.BudgetedSandbox`,
:class:`~jinja2.StrictUndefined`, no autoescape; every render and ``when`` within the budget of
:mod:`scrm.templating.budget`) over its message files; compiled templates are cached per
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import (
    Template,
)

from scrm.links import LinkWrapper
from scrm.sop.spec import AdvisorTask, Attachment, Message, TemplateBundle
from scrm.spec_fields import ATTACHMENTS_MAX
from scrm.templating.budget import render_budget
from scrm.templating.compiled import (
    CompiledBundle,
    CompiledBundles,
    Loc,
    SopRenderError,
    run_failure,
)
from scrm.templating.context import AttachmentCollector, link_attachment

log = logging.getLogger(__name__)

TEXT_MAX_BYTES = 4000  # add_msg_template / send_welcome_msg text.content limit
DEFAULT_FILE = "default.j2"


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """The text (stripped, ≤ 4000 bytes) and up to nine attachments in WeCom's shape."""

    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""  # advisor_task only: the card title
    file: str | None = None  # the message file used (None = inline text)


class SopRenderer:
    """Renders the messages and evaluates the ``when`` expressions of one template bundle."""

    def __init__(
        self, bundle: TemplateBundle, *, links: LinkWrapper | None = None, compiled: CompiledBundles | None = None
    ) -> None:
        """``compiled``: the process's cache of compiled bundles (the engine passes its own); without one the
        bundle is compiled for this renderer alone."""
        self.bundle = bundle
        self.links = links
        self._compiled = compiled.get(bundle) if compiled is not None else CompiledBundle(bundle)

    # ---- text ---------------------------------------------------------------------------------------------

    def _run(self, template: Template, file: str | None, context: Mapping[str, Any], extra: Mapping[str, Any]) -> str:
        try:
            return template.render({**context, **extra})
        except Exception as exc:  # the sandbox raises SecurityError, UndefinedError, TypeError, …
            raise run_failure(exc, file, self._compiled.files) from exc

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
        try:
            return self._finish(message, context, raw, file, collector, source)
        except SopRenderError as exc:
            default = f"{message.by_channel.strip('/')}/{DEFAULT_FILE}" if message.by_channel else None
            if default is None or file == default:
                raise
            # a channel file that renders but breaks a limit (too long, too many attachments, empty): the
            # default file answers, as for any other failure of a channel file
            log.error("SOP channel message failed, falling back to %s: %s", default, exc)
            return self.render(message.model_copy(update={"by_channel": None, "file": default}), context)

    def _finish(
        self,
        message: Message,
        context: Mapping[str, Any],
        raw: str,
        file: str | None,
        collector: AttachmentCollector,
        source: Loc,
    ) -> RenderedMessage:
        """The rendered body checked against WeCom's limits, with its attachments (tracked) and title."""
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
            with render_budget():
                return bool(function(**context))
        except Exception as exc:
            raise run_failure(exc, None, self._compiled.files) from exc

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


__all__ = ["DEFAULT_FILE", "TEXT_MAX_BYTES", "RenderedMessage", "SopRenderError", "SopRenderer"]
