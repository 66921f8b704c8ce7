"""Load generators: ``wrk`` replaying pre-generated callbacks (closed loop), and an aiohttp client for the
fixed-rate (open loop) run and as the closed-loop fallback when ``wrk`` is not installed.

Latency is measured by the client: from sending a request to reading its whole response. In the open loop
it is measured from the request's *scheduled* send time, so a stalled server cannot hide its backlog
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import Callback

REPLAY_LUA = Path(__file__).with_name("replay.lua")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class LoadResult:
    client: str
    mode: str  # "closed" (max throughput at a fixed concurrency) or "rate" (fixed arrival rate)
    requests: int
    seconds: float
    failures: int  # non-200 answers, connection errors, timeouts
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p90", "p99", "p99.9", "max"

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput": round(self.throughput, 1)}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _label(p: float) -> str:
    return f"p{p:g}"


def run_wrk(base_url: str, request_file: Path, *, quota: int, connections: int, threads: int) -> LoadResult:
    """Closed loop: ``connections`` keep-alive connections, each sending its next callback on every answer."""
    threads = max(1, min(threads, connections))
    per_thread = quota // threads
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        "-d300s",
        "--timeout",
        "10s",
        "-s",
        str(REPLAY_LUA),
        base_url,
        "--",
        str(request_file),
        str(threads),
        str(per_thread),
    ]
    out = _run_until_quota(cmd, threads)
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(line.removeprefix("BENCH_JSON "))
    errors = summary["quota_failed"] + sum(summary[k] for k in summary if k.startswith("errors_"))
    latency = {_label(float(p)): us / 1000 for p, us in summary["latency_percentiles_us"].items()}
    latency["max"] = summary["latency_max_us"] / 1000
    return LoadResult(
        client=f"wrk -t{threads} -c{connections}",
        mode="closed",
        requests=summary["quota_ok"] + summary["quota_failed"],
        seconds=summary["quota_us"] / 1e6,
        failures=errors,
        latency_ms=latency,
    )


def _run_until_quota(cmd: list[str], threads: int) -> str:
    """Run wrk until each thread has printed QUOTA_DONE, then SIGINT it (ends its -d sleep); its stdout."""
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        done = 0
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("QUOTA_DONE"):
                done += 1
                if done == threads:
                    proc.send_signal(signal.SIGINT)
        if proc.wait(timeout=30) != 0:
            raise RuntimeError(f"wrk exited with {proc.returncode}:\n{''.join(lines)}")
    return "".join(lines)


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ordered = sorted(latencies_s)
    result = {}
    for p in PERCENTILES:
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        result[_label(p)] = ordered[index] * 1000
    result["max"] = ordered[-1] * 1000
    return result


async def _post(session: aiohttp.ClientSession, base_url: str, cb: Callback) -> bool:
    try:
        async with session.post(base_url + cb.target, data=cb.body, headers={"Content-Type": "text/xml"}) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _fixed_rate(base_url: str, callbacks: list[Callback], rate: float) -> LoadResult:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one(cb: Callback, due: float) -> None:
            nonlocal failures
            ok = await _post(session, base_url, cb)
            latencies.append(loop.time() - due)
            failures += not ok

        start = loop.time() + 0.05
        async with asyncio.TaskGroup() as group:
            for i, cb in enumerate(callbacks):
                due = start + i / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one(cb, due))
        seconds = loop.time() - start
    return LoadResult(
        client="aiohttp open loop",
        mode=f"rate {rate:g}/s",
        requests=len(callbacks),
        seconds=seconds,
        failures=failures,
        latency_ms=_percentiles(latencies),
    )


def run_fixed_rate(base_url: str, callbacks: list[Callback], rate: float) -> LoadResult:
    """Open loop: send at ``rate`` requests per second whatever the server does."""
    return asyncio.run(_fixed_rate(base_url, callbacks, rate))


async def _closed_loop_part(
    base_url: str, callbacks: list[Callback], concurrency: int
) -> tuple[float, float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    pending = iter(callbacks)
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal failures
            for cb in pending:
                sent = time.perf_counter()
                failures += not await _post(session, base_url, cb)
                latencies.append(time.perf_counter() - sent)

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ended = time.time()
    return started, ended, latencies, failures


def _closed_loop_process(
    base_url: str, callbacks: list[Callback], concurrency: int
) -> tuple[float, float, list[float], int]:
    return asyncio.run(_closed_loop_part(base_url, callbacks, concurrency))


def run_closed_loop_aiohttp(
    base_url: str, callbacks: list[Callback], *, connections: int, processes: int
) -> LoadResult:
    """The fallback closed loop: ``processes`` client processes sharing ``connections`` connections."""
    parts = [callbacks[i::processes] for i in range(processes)]
    per_process = max(1, connections // processes)
    with ProcessPoolExecutor(max_workers=processes) as pool:
        results = list(pool.map(_closed_loop_process, [base_url] * processes, parts, [per_process] * processes))
    started = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    return LoadResult(
        client=f"aiohttp x{processes} -c{per_process * processes}",
        mode="closed",
        requests=len(latencies),
        seconds=ended - started,
        failures=sum(r[3] for r in results),
        latency_ms=_percentiles(latencies),
    )
