"""Welcome messages (欢迎语) rendered from operator-edited Jinja2 templates.

Templates live in ``<sop_dir>/welcome/``: ``default.j2`` and one optional override per channel
(``qr.j2``, ``ad.j2``, ``referral.j2``, ``event.j2`` …; the channel names of :mod:`scrm.channel`). They run
in a :class:`~jinja2.sandbox.SandboxedEnvironment` with :class:`~jinja2.StrictUndefined`, so a typo is an
error and not an empty string, and ``{{ ''.__class__ }}`` is refused.

Variables (always present, see :func:`build_context`): ``contact`` (``external_userid``, ``name`` — often
empty at callback time), ``staff`` (``userid``, ``name``), ``dealer`` (``code``, ``name``, ``city``),
``channel`` (``name``, ``dealer``, ``advisor``, ``referrer``, ``campaign``, ``raw``) and ``now`` (China
Standard Time). Files starting with ``_`` are partials for ``{% include %}``, never chosen by channel.
Functions: ``attach_link(title, url, desc="", picurl="")``, ``attach_image(pic_url)`` and
``attach_miniprogram(title, appid, page, pic_media_id)`` add an attachment and print nothing.

A template that fails (syntax, undefined variable, sandbox refusal, text over 4000 bytes) produces a
:class:`WelcomeTemplateError` naming the file and line; :meth:`WelcomeRenderer.render` then logs it and
falls back to ``default.j2``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from scrm.channel import ChannelInfo
from scrm.errors import DomainError
from scrm.sop.context import install_filters

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "default.j2"
TEXT_MAX_BYTES = 4000  # send_welcome_msg text.content limit
ATTACHMENTS_MAX = 9
CHINA_TZ = timezone(timedelta(hours=8), "CST")


class WelcomeTemplateError(DomainError):
    """A welcome template could not be rendered; ``str()`` is ``file:line: reason``."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class WelcomeMessage:
    """What ``send_welcome_msg`` needs: the text and up to nine attachments in WeCom's shape."""

    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    template: str = DEFAULT_TEMPLATE


def _with_defaults(given: Mapping[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    if given:
        merged.update({k: ("" if v is None else v) for k, v in given.items()})
    return merged


def build_context(
    *,
    contact: Mapping[str, Any] | None = None,
    staff: Mapping[str, Any] | None = None,
    dealer: Mapping[str, Any] | None = None,
    channel: ChannelInfo | None = None,
    now: datetime,
) -> dict[str, Any]:
    """The variables every welcome template may use, with empty strings for what is not known yet."""
    info = channel or ChannelInfo()
    return {
        "contact": _with_defaults(contact, {"external_userid": "", "name": ""}),
        "staff": _with_defaults(staff, {"userid": "", "name": ""}),
        "dealer": _with_defaults(dealer, {"code": "", "name": "", "city": ""}),
        "channel": {
            "name": info.channel,
            "dealer": info.dealer,
            "advisor": info.advisor,
            "referrer": info.referrer,
            "campaign": info.campaign,
            "raw": info.raw,
        },
        "now": now.astimezone(CHINA_TZ),
    }


class _Attachments:
    """Collects attachments while one template renders (the functions return "" so they print nothing)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def functions(self) -> dict[str, Callable[..., str]]:
        return {
            "attach_link": self.link,
            "attach_image": self.image,
            "attach_miniprogram": self.miniprogram,
        }

    def _add(self, item: dict[str, Any]) -> str:
        if len(self.items) >= ATTACHMENTS_MAX:
            raise ValueError(f"more than {ATTACHMENTS_MAX} attachments")
        self.items.append(item)
        return ""

    def link(self, title: str, url: str, desc: str = "", picurl: str = "") -> str:
        link = {
            "title": title,
            "url": url,
            **({"desc": desc} if desc else {}),
            **({"picurl": picurl} if picurl else {}),
        }
        return self._add({"msgtype": "link", "link": link})

    def image(self, pic_url: str) -> str:
        return self._add({"msgtype": "image", "image": {"pic_url": pic_url}})

    def miniprogram(self, title: str, appid: str, page: str, pic_media_id: str) -> str:
        mini = {"title": title, "appid": appid, "page": page, "pic_media_id": pic_media_id}
        return self._add({"msgtype": "miniprogram", "miniprogram": mini})


def _template_position(tb: TracebackType | None, directory: Path) -> tuple[Path, int] | None:
    """File and line of the innermost traceback frame Jinja attributed to a template in ``directory``."""
    found: tuple[Path, int] | None = None
    while tb is not None:
        filename = Path(tb.tb_frame.f_code.co_filename)
        if filename.suffix == ".j2" and filename.parent == directory:
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


class WelcomeRenderer:
    """Renders ``<sop_dir>/welcome/<channel>.j2`` (or ``default.j2``); templates are compiled once."""

    def __init__(self, sop_dir: str | Path) -> None:
        self.directory = Path(sop_dir) / "welcome"
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(self.directory, encoding="utf-8"),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=False,
            cache_size=-1,
            keep_trailing_newline=False,
        )
        install_filters(self._env)  # the SOP filters (greeting, cn_date…), so shared partials render here too
        self._compiled: dict[str, Template | WelcomeTemplateError] = {}

    def template_for(self, channel: str) -> str:
        """The file used for ``channel``: its override when one exists, else ``default.j2``."""
        name = f"{channel}.j2"
        if channel and "/" not in channel and channel[0] not in "._" and (self.directory / name).is_file():
            return name
        return DEFAULT_TEMPLATE

    def _load(self, name: str) -> Template:
        cached = self._compiled.get(name)
        if cached is None:
            try:
                cached = self._env.get_template(name)
            except TemplateSyntaxError as exc:
                cached = WelcomeTemplateError(self.directory / name, exc.lineno, exc.message or "syntax error")
            except (TemplateError, OSError) as exc:
                cached = WelcomeTemplateError(self.directory / name, None, f"cannot load: {exc}")
            self._compiled[name] = cached
        if isinstance(cached, WelcomeTemplateError):
            raise cached
        return cached

    def render_template(self, name: str, context: Mapping[str, Any]) -> WelcomeMessage:
        """Render one file; raises :class:`WelcomeTemplateError` (file and line) on any problem."""
        template = self._load(name)
        attachments = _Attachments()
        path = self.directory / name
        try:
            text = template.render({**context, **attachments.functions()}).strip()
        except Exception as exc:  # the sandbox raises SecurityError, UndefinedError, TypeError, …
            where = _template_position(exc.__traceback__, Path(template.filename or path).parent)
            raise WelcomeTemplateError(
                where[0] if where else path, where[1] if where else None, f"{type(exc).__name__}: {exc}"
            ) from exc
        size = len(text.encode("utf-8"))
        if size > TEXT_MAX_BYTES:
            raise WelcomeTemplateError(path, None, f"text is {size} bytes, over the {TEXT_MAX_BYTES}-byte limit")
        if not text and not attachments.items:
            raise WelcomeTemplateError(path, None, "renders to an empty message")
        return WelcomeMessage(text=text, attachments=attachments.items, template=name)

    def render(self, channel: str, context: Mapping[str, Any]) -> WelcomeMessage:
        """Render the channel's template, falling back to ``default.j2`` when it fails.

        Raises :class:`WelcomeTemplateError` only when ``default.j2`` itself cannot be rendered.
        """
        name = self.template_for(channel)
        if name != DEFAULT_TEMPLATE:
            try:
                return self.render_template(name, context)
            except WelcomeTemplateError as exc:
                log.error(
                    "welcome template failed, falling back to %s: %s",
                    DEFAULT_TEMPLATE,
                    exc,
                    extra={"template": name, "channel": channel, "reason": exc.reason, "line": exc.line},
                )
        return self.render_template(DEFAULT_TEMPLATE, context)

    def check(self, context: Mapping[str, Any] | None = None) -> list[WelcomeTemplateError]:
        """Render every template once with a sample context; the problems found (empty list = all good)."""
        sample = context or build_context(
            contact={"external_userid": "wmSAMPLE", "name": "王先生"},
            staff={"userid": "zhangsan", "name": "张三"},
            dealer={"code": "BJ001", "name": "北京示例4S店", "city": "北京"},
            now=datetime(2024, 5, 1, 2, 0, tzinfo=UTC),
        )
        problems: list[WelcomeTemplateError] = []
        for path in sorted(self.directory.glob("*.j2")):
            if path.name.startswith("_"):  # partials are checked through the templates that include them
                continue
            try:
                self.render_template(path.name, sample)
            except WelcomeTemplateError as exc:
                problems.append(exc)
        return problems


@functools.lru_cache(maxsize=8)
def _renderer(directory: Path) -> WelcomeRenderer:
    return WelcomeRenderer(directory)


def renderer_for(sop_dir: str | Path) -> WelcomeRenderer:
    """One shared renderer per SOP folder, so templates are compiled once per process."""
    return _renderer(Path(sop_dir).resolve())
