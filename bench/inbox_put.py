"""What durability costs on the acknowledgement path: ``Inbox.put`` on each backend and Redis persistence setting.

The edge answers WeCom only after ``put`` returns, so a put's latency is part of every callback's ack and its
throughput bounds the edge. Backends, all on this machine's disk, each measured in the same run:

* ``redis volatile``  — a redis-server of its own with ``--appendonly no --save ""`` (the baseline: keeps nothing);
* ``redis everysec``  — ``--appendonly yes --appendfsync everysec`` (what the README recommends);
* ``redis always``    — ``--appendonly yes --appendfsync always`` (an fsync before every reply);
* ``sql postgresql``  — :class:`~bot.inbox.sql.SqlInbox` on a scratch PostgreSQL database (a commit per batch);
* ``sql sqlite``      — the same on a SQLite file.

Each backend takes ``--items`` puts from ``--concurrency`` concurrent callers (the edge under load; concurrent puts
share a pipeline / a transaction), then ``--serial`` puts one at a time (a quiet edge: one callback's latency).

    python -m bench.inbox_put [--items 3000] [--concurrency 64] [--serial 300] [--pg-dsn DSN]

Figures are printed and written to ``bench/results/inbox_put-<time>.json`` (and ``-latest``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.welcome_stack import free_port, scratch_database
from bot.inbox.base import Inbox, InboxItem
from bot.inbox.redis_streams import RedisInbox
from bot.inbox.sql import SqlInbox
from bot.redis_keys import RedisKeys
from bot.runtime import migrate
from scrm.db import make_engine, make_session_factory

RESULTS_DIR = Path(__file__).with_name("results")
REDIS_CONFIGS = {
    "redis volatile": ("--appendonly", "no", "--save", ""),
    "redis everysec": ("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
    "redis always": ("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
}


def event(n: int, run: str) -> InboxItem:
    """An add_external_contact event of the size the edge stores."""
    payload = {
        "event_type": "contact.added",
        "userid": f"staff{n % 50:03d}",
        "external_userid": f"wmBench{run}{n:08d}xxxxxxxxxxxxxxxxxx",
        "state": "c:ad01|d:BJ001",
        "welcome_code": f"WELCOMECODE{n:010d}" * 2,
        "create_time": 1_700_000_000 + n,
        "change_type": "add_external_contact",
    }
    return InboxItem(f"add:{run}:{n}", f"contact:{run}:{n}", "contact.added", "wwbenchcorp", payload)


async def timed_puts(inbox: Inbox, items: list[InboxItem], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(reversed(items))

    async def caller() -> None:
        while queue:
            item = queue.pop()
            started = time.perf_counter()
            assert await inbox.put(item)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "puts_per_s": round(len(items) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


@asynccontextmanager
async def redis_server(config: tuple[str, ...]) -> AsyncIterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="lianyi-bench-redis-"))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        shutil.which("redis-server") or "/usr/bin/redis-server",
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--logfile", str(folder / "log")),
        *config,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.from_url(url)
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    await client.ping()
                    break
                except (RedisConnectionError, BusyLoadingError):
                    await asyncio.sleep(0.05)
        yield url
    finally:
        await client.aclose()
        proc.kill()
        await proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


async def measure(inbox: Inbox, args: argparse.Namespace, name: str) -> dict[str, Any]:
    run = name.replace(" ", "")
    loaded = await timed_puts(inbox, [event(n, run) for n in range(args.items)], args.concurrency)
    serial = await timed_puts(inbox, [event(n, run + "s") for n in range(args.serial)], 1)
    return {"backend": name, "concurrent": loaded, "serial": serial}


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, config in REDIS_CONFIGS.items():
        async with redis_server(config) as url:
            client = aioredis.from_url(url)
            inbox = RedisInbox(client, RedisKeys("bench"))
            try:
                rows.append(await measure(inbox, args, name))
            finally:
                await inbox.close()
                await client.aclose()
    async with scratch_database(args.pg_dsn) as pg_url:
        rows.append(await measure_sql(pg_url, args, "sql postgresql"))
    folder = Path(tempfile.mkdtemp(prefix="lianyi-bench-sqlite-"))
    try:
        sqlite_url = f"sqlite+aiosqlite:///{folder / 'inbox.db'}"
        await asyncio.to_thread(migrate.upgrade, sqlite_url)
        rows.append(await measure_sql(sqlite_url, args, "sql sqlite"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


async def measure_sql(url: str, args: argparse.Namespace, name: str) -> dict[str, Any]:
    engine = make_engine(url)
    inbox = SqlInbox(make_session_factory(engine))
    try:
        return await measure(inbox, args, name)
    finally:
        await inbox.close()
        await engine.dispose()


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = rows[0]
    print(f"Inbox.put: {args.items} puts from {args.concurrency} callers, then {args.serial} one at a time")
    print(f"{'backend':<16} {'puts/s':>8} {'x base':>7} {'p50 ms':>8} {'p99 ms':>8} | {'serial p50':>10} {'p99':>7}")
    for row in rows:
        c, s = row["concurrent"], row["serial"]
        ratio = c["puts_per_s"] / base["concurrent"]["puts_per_s"]
        print(
            f"{row['backend']:<16} {c['puts_per_s']:>8.0f} {ratio:>7.2f} {c['p50_ms']:>8.2f} {c['p99_ms']:>8.2f} | "
            f"{s['p50_ms']:>10.2f} {s['p99_ms']:>7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serial", type=int, default=300)
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rows = asyncio.run(bench(args))
    report(rows, args)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = {"args": vars(args), "rows": rows}
    for name in (f"inbox_put-{stamp}.json", "inbox_put-latest.json"):
        (RESULTS_DIR / name).write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
