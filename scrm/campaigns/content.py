"""Rendering a campaign's content per target, and the fingerprint that groups identical messages into batches.

One ``add_msg_template`` call carries one text for all its recipients, so targets whose rendered content is
identical (same sender) share a batch; a text that names the group (``{{ group.name }}``) makes every group
its own call. The context is the SOP one (:func:`scrm.templating.context.build_context`): ``group``, ``contact``,
``staff`` (the sender), ``dealer``, ``now``, plus ``campaign`` (code, name). Link attachments become tracked
links with source ``campaign:<code>:<slot>``: per batch, not per customer, so tracking never splits a batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError

from scrm.campaigns.spec import TEXT_MAX_BYTES, CampaignContent, canonical_json
from scrm.errors import DomainError
from scrm.links import LinkWrapper
from scrm.templating.compiled import run_failure, syntax_error
from scrm.templating.context import SAMPLE_CONTEXT, install_filters, link_attachment
from scrm.templating.sandbox import BudgetedSandbox


class CampaignRenderError(DomainError):
    """The content cannot be rendered for a target; ``message_cn`` is for operators."""

    def __init__(self, code: str, message_cn: str) -> None:
        self.code = code
        self.message_cn = message_cn
        super().__init__(f"{code} {message_cn}")


@dataclass(frozen=True, slots=True)
class RenderedContent:
    text: str
    attachments: list[dict[str, Any]]
    fingerprint: str  # sha256 of text + attachments (before link tracking, which is the same per batch)


def _environment() -> BudgetedSandbox:
    env = BudgetedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    install_filters(env)
    return env


class ContentRenderer:
    """Compiles the text and the templated attachment fields once; renders them per target."""

    def __init__(self, content: CampaignContent, *, links: LinkWrapper | None = None, corp_id: str = "") -> None:
        self._env = _environment()
        self._content = content
        self._links = links
        self._corp_id = corp_id
        self._templates: dict[str, Template] = {}
        self._compile(content.text)
        for item in content.attachments:
            if item.link is not None:
                for value in (item.link.title, item.link.url, item.link.desc, item.link.picurl):
                    self._compile(value)
            if item.miniprogram is not None:
                self._compile(item.miniprogram.title)
                self._compile(item.miniprogram.page)

    def _compile(self, source: str) -> None:
        if "{" not in source or source in self._templates:
            return
        try:
            self._templates[source] = self._env.from_string(source)
        except TemplateSyntaxError as exc:
            error = syntax_error(exc, None)
            raise CampaignRenderError(error.code, error.message_cn) from None

    def _render(self, source: str, context: Mapping[str, Any]) -> str:
        template = self._templates.get(source)
        if template is None:
            return source
        try:
            return template.render(context)
        except Exception as exc:
            error = run_failure(exc, None, {})
            raise CampaignRenderError(error.code, error.message_cn) from None

    def render(self, context: Mapping[str, Any]) -> RenderedContent:
        text = self._render(self._content.text, context).strip()
        size = len(text.encode("utf-8"))
        if size > TEXT_MAX_BYTES:
            raise CampaignRenderError("text_too_long", f"正文 {size} 字节，超过 {TEXT_MAX_BYTES} 字节上限")
        attachments: list[dict[str, Any]] = []
        for item in self._content.attachments:
            if item.link is not None:
                link = item.link
                fields = [self._render(v, context) for v in (link.title, link.url, link.desc, link.picurl)]
                attachments.append(link_attachment(*fields))
            elif item.image is not None:
                attachments.append(
                    {"msgtype": "image", "image": {k: v for k, v in item.image.model_dump().items() if v}}
                )
            elif item.miniprogram is not None:
                mini = item.miniprogram.model_dump()
                mini["title"] = self._render(mini["title"], context)
                mini["page"] = self._render(mini["page"], context)
                attachments.append({"msgtype": "miniprogram", "miniprogram": mini})
        if not text and not attachments:
            raise CampaignRenderError("empty_message", "消息渲染后为空（没有正文也没有附件）")
        fingerprint = hashlib.sha256(canonical_json({"text": text, "attachments": attachments}).encode()).hexdigest()
        return RenderedContent(text, attachments, fingerprint)

    def tracked(self, attachments: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """The attachments as sent: link urls wrapped as tracked links (when links are tracked)."""
        if self._links is None:
            return attachments
        out: list[dict[str, Any]] = []
        for item in attachments:
            if item.get("msgtype") == "link":
                link = dict(item["link"])
                link["url"] = self._links.wrap(link["url"], corp_id=self._corp_id, external_userid="", source=source)
                item = {"msgtype": "link", "link": link}
            out.append(item)
        return out


def check_content(content: CampaignContent) -> CampaignRenderError | None:
    """Render ``content`` against the documented sample context; the first problem, or None."""
    try:
        ContentRenderer(content).render({**SAMPLE_CONTEXT, "campaign": {"code": "sample", "name": "示例活动"}})
    except CampaignRenderError as exc:
        return exc
    return None
