"""Logging setup: one JSON object per line (python-json-logger), or plain text for humans."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", *, json_lines: bool = True, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (default stderr) from every logger at ``level``, except the libraries whose records
    would carry the database's content."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per callback; keep it at WARNING unless debugging.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # SQLAlchemy logs statements' values at INFO and result rows at DEBUG, aiosqlite every statement with its values
    # at DEBUG: the database's content (names, phone numbers, message text) must never reach the logs.
    for library in ("sqlalchemy", "aiosqlite"):
        logging.getLogger(library).setLevel(logging.WARNING)
    for name, child in logging.root.manager.loggerDict.items():  # a child given its own level would override that
        if name.startswith(("sqlalchemy.", "aiosqlite.")) and isinstance(child, logging.Logger):
            child.setLevel(logging.NOTSET)
