"""The server of ``bench.ingest_vs_callback``: the app as ``lianyi serve`` builds it, plus a transaction timer.

    python -m bench.ingest_server --port PORT      (settings from the LIANYI_* environment)

:func:`bot.runtime.app.create_app` with every role, on the database of ``LIANYI_DATABASE_URL`` (migrated by the
caller). :class:`TransactionTimer` listens on the runtime's engine and times every transaction from SQLAlchemy's
``begin`` to its ``commit`` or ``rollback``; a transaction that inserted into ``messages`` counts as the ingest's
(nothing else in the bench stores messages); of the others the five longest are kept with their first statement.
``GET /_bench/transactions`` answers the figures so far as JSON and ``POST`` resets them. The timer only records;
it changes nothing the app does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.welcome_stack import free_port
from bot.logs import configure_logging
from bot.runtime.app import RUNTIME_KEY, create_app
from bot.settings import load_settings

_STARTED = "bench_tx_started"
_INGEST = "bench_tx_ingest"
_FIRST = "bench_tx_first_statement"


class TransactionTimer:
    """Durations (ms) of the engine's transactions: the ingest's and all others."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.ingest_ms: list[float] = []
        self.other_ms: list[float] = []
        self.longest_others: list[tuple[float, str]] = []  # the 5 longest, with their first statement
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "begin", self._begin)
        event.listen(sync_engine, "before_cursor_execute", self._statement)
        event.listen(sync_engine, "commit", self._end)
        event.listen(sync_engine, "rollback", self._end)

    def _begin(self, conn: Any) -> None:
        conn.info[_STARTED] = time.perf_counter()
        conn.info[_INGEST] = False
        conn.info[_FIRST] = ""

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:20].upper().startswith("INSERT INTO MESSAGES"):
            conn.info[_INGEST] = True
        if not conn.info.get(_FIRST) and not statement.lstrip().upper().startswith("BEGIN"):
            conn.info[_FIRST] = " ".join(statement.split())[:100]

    def _end(self, conn: Any) -> None:
        started = conn.info.pop(_STARTED, None)
        if started is None:
            return
        elapsed = (time.perf_counter() - started) * 1000
        if conn.info.pop(_INGEST, False):
            self.ingest_ms.append(elapsed)
            return
        self.other_ms.append(elapsed)
        self.longest_others = sorted([*self.longest_others, (elapsed, conn.info.get(_FIRST, ""))], reverse=True)[:5]

    def figures(self) -> dict[str, Any]:
        return {
            "ingest_transactions": len(self.ingest_ms),
            "ingest_longest_ms": round(max(self.ingest_ms, default=0.0), 1),
            "ingest_total_ms": round(sum(self.ingest_ms), 1),
            "other_transactions": len(self.other_ms),
            "other_longest_ms": round(max(self.other_ms, default=0.0), 1),
            "other_longest": [[round(ms, 1), first] for ms, first in self.longest_others],
        }

    def reset(self) -> None:
        self.ingest_ms.clear()
        self.other_ms.clear()
        self.longest_others.clear()


@asynccontextmanager
async def server(values: dict[str, str], log_path: Path) -> AsyncIterator[str]:
    """This module in a subprocess; yields its base URL once /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update({f"LIANYI_{k.upper()}": v for k, v in values.items()})
    with log_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.ingest_server", "--port", str(port), env=env, stderr=stderr
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if proc.returncode is not None:
                    tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
                    raise RuntimeError(f"server exited: {tail}")
                try:
                    async with http.get(base + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        await proc.wait()


def build_app() -> web.Application:
    settings = load_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    app = create_app(settings)
    timer = TransactionTimer(app[RUNTIME_KEY].engine)

    async def transactions(request: web.Request) -> web.Response:
        figures = timer.figures()
        if request.method == "POST":
            timer.reset()
        return web.json_response(figures)

    app.router.add_route("GET", "/_bench/transactions", transactions)
    app.router.add_route("POST", "/_bench/transactions", transactions)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ingest_server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
