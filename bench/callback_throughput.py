"""Callback throughput: the real edge over the Redis inbox against a bare aiohttp handler, same load.

    .venv/bin/python -m bench.callback_throughput [--requests N] [--concurrency C] [--rounds R]

Per round, each server (``bench.servers``) runs in its own process, one at a time, and gets a warm-up
then the same pre-generated callbacks (distinct, signed, encrypted add_external_contact events) in a
closed loop at concurrency C (``wrk`` if installed, else an aiohttp client). Then each gets an open-loop
run at a fixed rate. Reported: max throughput of each server (median over rounds), the ratio edge/bare,
ack latency p50/p99 seen by the client, the CPU time the server process and Redis spent per request, and
whether every callback sent to the edge landed in the inbox. Figures are printed as a table and written
to bench/results/ as JSON. All Redis keys live under a fresh prefix that is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.clients import LoadResult, run_closed_loop_aiohttp, run_fixed_rate, run_wrk, wrk_available
from bench.load import Callback, make_callbacks, write_wrk_file
from bot.redis_keys import RedisKeys

RESULTS_DIR = Path(__file__).with_name("results")
SERVERS = ("edge", "bare")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Measured:
    server: str
    load: LoadResult
    server_cpu_us: float  # CPU time of the server process per answered request
    redis_cpu_us: float  # CPU time of redis-server per answered request
    stored: int | None  # entries added to the inbox streams during the run (edge only)

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            **self.load.as_dict(),
            "server_cpu_us_per_request": round(self.server_cpu_us, 1),
            "redis_cpu_us_per_request": round(self.redis_cpu_us, 1),
            "stored": self.stored,
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


@contextmanager
def running_server(kind: str, args: argparse.Namespace, prefix: str, log_path: Path) -> Iterator[tuple[str, int]]:
    """Start ``bench.servers KIND`` in its own process; yield (base URL, pid); stop it afterwards."""
    port = _free_port()
    cmd = [sys.executable, "-m", "bench.servers", kind, "--port", str(port), "--prefix", prefix]
    cmd += ["--redis-url", args.redis_url, "--partitions", str(args.partitions)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"{kind} server did not start (exit {proc.poll()}); see {log_path}")
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


class RedisProbe:
    """Reads redis-server CPU time and the inbox stream lengths under the benchmark prefix."""

    def __init__(self, url: str, prefix: str, partitions: int) -> None:
        self._url = url
        self._keys = RedisKeys(prefix)
        self._partitions = partitions

    async def _cpu_and_length(self) -> tuple[float, int]:
        client = aioredis.from_url(self._url)
        try:
            info = await client.info("cpu")
            length = 0
            for lane in range(self._partitions):
                length += int(await client.xlen(self._keys.inbox_stream(lane)))
        finally:
            await client.aclose()
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), length

    def sample(self) -> tuple[float, int]:
        return asyncio.run(self._cpu_and_length())

    async def _delete_all(self) -> int:
        client = aioredis.from_url(self._url)
        try:
            keys = [k async for k in client.scan_iter(match=self._keys.all_keys_pattern(), count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()
        return len(keys)

    def delete_all(self) -> int:
        return asyncio.run(self._delete_all())


def _closed_loop(
    base_url: str, callbacks: list[Callback], file: Path, quota: int, args: argparse.Namespace
) -> LoadResult:
    if args.client == "wrk":
        return run_wrk(base_url, file, quota=quota, connections=args.concurrency, threads=args.wrk_threads)
    return run_closed_loop_aiohttp(base_url, callbacks[:quota], connections=args.concurrency, processes=2)


def measure(kind: str, server: tuple[str, int], probe: RedisProbe, run: Callable[[str], LoadResult]) -> Measured:
    base_url, pid = server
    cpu_before = _process_cpu_seconds(pid)
    redis_before, length_before = probe.sample()
    load: LoadResult = run(base_url)
    cpu_after = _process_cpu_seconds(pid)
    redis_after, length_after = probe.sample()
    answered = max(load.requests, 1)
    return Measured(
        server=kind,
        load=load,
        server_cpu_us=(cpu_after - cpu_before) / answered * 1e6,
        redis_cpu_us=(redis_after - redis_before) / answered * 1e6,
        stored=length_after - length_before if kind == "edge" else None,
    )


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"lianyi-bench-{run_id}"
    probe = RedisProbe(args.redis_url, prefix, args.partitions)
    log_path = workdir / "servers.log"
    spares = args.concurrency + 16
    batch = 0

    def fresh(count: int) -> tuple[list[Callback], Path]:
        nonlocal batch
        batch += 1
        callbacks = make_callbacks(count, run_id=f"{run_id}b{batch}")
        file = workdir / f"batch{batch}.txt"
        write_wrk_file(callbacks, file)
        return callbacks, file

    closed: dict[str, list[Measured]] = {kind: [] for kind in SERVERS}
    rate: dict[str, Measured] = {}
    try:
        for round_no in range(args.rounds):
            callbacks, file = fresh(args.requests + spares)
            for kind in SERVERS:  # the same callbacks for both servers; the bare one stores nothing
                warm, warm_file = fresh(args.warmup + spares)
                with running_server(kind, args, prefix, log_path) as server:
                    _closed_loop(server[0], warm, warm_file, args.warmup, args)
                    load = functools.partial(
                        _closed_loop, callbacks=callbacks, file=file, quota=args.requests, args=args
                    )
                    m = measure(kind, server, probe, load)
                closed[kind].append(m)
                print(f"round {round_no + 1}/{args.rounds} {kind}: {m.load.throughput:,.0f} req/s", flush=True)
        for kind in SERVERS:
            paced, _ = fresh(int(args.rate * args.rate_seconds))
            warm, warm_file = fresh(args.warmup + spares)
            with running_server(kind, args, prefix, log_path) as server:
                _closed_loop(server[0], warm, warm_file, args.warmup, args)
                rate[kind] = measure(
                    kind, server, probe, functools.partial(run_fixed_rate, callbacks=paced, rate=args.rate)
                )
    finally:
        deleted = probe.delete_all()
    return summarize(args, closed, rate, prefix, deleted)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def summarize(
    args: argparse.Namespace, closed: dict[str, list[Measured]], rate: dict[str, Measured], prefix: str, deleted: int
) -> dict[str, Any]:
    best = {kind: sorted(runs, key=lambda m: m.load.throughput)[len(runs) // 2] for kind, runs in closed.items()}
    edge_tp = _median([m.load.throughput for m in closed["edge"]])
    bare_tp = _median([m.load.throughput for m in closed["bare"]])
    edge_sent = sum(m.load.requests for m in closed["edge"])
    edge_stored = sum(m.stored or 0 for m in closed["edge"])
    return {
        "benchmark": "callback_throughput",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "note": f"the client ({args.client}), the server process and redis-server share these CPUs",
        },
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "rate": args.rate,
            "rate_seconds": args.rate_seconds,
            "partitions": args.partitions,
            "client": args.client,
            "redis_prefix": prefix,
            "redis_keys_deleted": deleted,
        },
        "ratio": round(edge_tp / bare_tp, 3) if bare_tp else None,
        "edge_throughput": round(edge_tp, 1),
        "bare_throughput": round(bare_tp, 1),
        "edge_median_run": best["edge"].as_dict(),
        "bare_median_run": best["bare"].as_dict(),
        "edge_all_stored": edge_stored >= edge_sent and all(m.load.failures == 0 for m in closed["edge"]),
        "closed_loop_runs": {kind: [m.as_dict() for m in runs] for kind, runs in closed.items()},
        "fixed_rate": {kind: m.as_dict() for kind, m in rate.items()},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(result: dict[str, Any]) -> None:
    rows = [("server", "mode", "req/s", "p50 ms", "p99 ms", "max ms", "srv CPU µs/req", "redis µs/req", "fail")]
    for kind in SERVERS:
        for m in [result[f"{kind}_median_run"], result["fixed_rate"].get(kind)]:
            if m is None:
                continue
            lat = m["latency_ms"]
            rows.append(
                (
                    kind,
                    m["mode"],
                    f"{m['throughput']:,.0f}",
                    f"{lat.get('p50', 0):.2f}",
                    f"{lat.get('p99', 0):.2f}",
                    f"{lat.get('max', 0):.2f}",
                    f"{m['server_cpu_us_per_request']:.0f}",
                    f"{m['redis_cpu_us_per_request']:.0f}",
                    str(m["failures"]),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    s = result["settings"]
    print(
        f"\nratio edge/bare (median of {s['rounds']} closed-loop rounds, {s['requests']} callbacks each, "
        f"concurrency {s['concurrency']}): {result['ratio']}  (target >= 0.90)"
    )
    print(f"every callback sent to the edge stored in the inbox: {result['edge_all_stored']}")
    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}; {m['note']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Callback edge (Redis inbox) vs bare aiohttp handler throughput.")
    parser.add_argument("--requests", type=int, default=15000, help="callbacks per closed-loop run")
    parser.add_argument("--concurrency", type=int, default=64, help="connections of the closed loop")
    parser.add_argument("--rounds", type=int, default=3, help="closed-loop rounds per server (median reported)")
    parser.add_argument("--warmup", type=int, default=1000, help="callbacks sent before each measured run")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second of the fixed-rate run")
    parser.add_argument("--rate-seconds", type=float, default=8.0, help="length of the fixed-rate run")
    parser.add_argument("--partitions", type=int, default=16, help="inbox partitions (Redis streams)")
    parser.add_argument("--redis-url", default=os.environ.get("LIANYI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--client", choices=["wrk", "aiohttp"], default="wrk" if wrk_available() else "aiohttp")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1 leaves a core to the server)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
    if args.client == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install wrk), use --client aiohttp")
    with tempfile.TemporaryDirectory(prefix="lianyi-bench-") as tmp:
        result = run_benchmark(args, Path(tmp))
    print()
    print_table(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = args.output or RESULTS_DIR / f"callback_throughput-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS_DIR / "callback_throughput-latest.json").write_text(out.read_text(encoding="utf-8"), encoding="utf-8")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
