"""Logging setup: one JSON object per line (python-json-logger), or plain text for humans."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
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
