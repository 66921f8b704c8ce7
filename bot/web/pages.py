"""Server-rendered pages: one Jinja2 environment over ``bot/web/templates`` (autoescape on, so whatever a person
typed is text, never markup) and the response helpers the console's routes share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'",
}

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, *, status: int = 200, **context: Any) -> web.Response:
    """The page ``name`` rendered with ``context`` (HTML, UTF-8, never cached)."""
    text = _environment.get_template(name).render(**context)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` (after a form POST, and for pages that need a sign-in)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
