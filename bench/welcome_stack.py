"""The system under test of ``bench.welcome_latency``: scratch PostgreSQL + Redis, and `lianyi serve` processes.

* :func:`scratch_database` creates a fresh PostgreSQL database, migrates it with :func:`bot.runtime.migrate.upgrade`
  and drops it afterwards; :func:`scratch_redis_prefix` yields a unique key prefix and deletes its keys.
* :class:`LianyiProcesses` starts one ``lianyi serve --roles …`` subprocess per role group (the first group
  must hold ``edge``), waits until each answers ``/healthz``, and samples their CPU time from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import redis.asyncio as aioredis

from bot.runtime import migrate

LIANYI = Path(sys.executable).with_name("lianyi")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """A migrated scratch database on the server of ``admin_dsn``; yields its SQLAlchemy async URL."""
    name = f"lianyi_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = admin_dsn.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def scratch_redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique Redis key prefix; every key under it is deleted at the end."""
    prefix = f"lianyi-bench-welcome-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        redis = aioredis.from_url(redis_url)
        try:
            keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await redis.delete(*keys[start : start + 500])
        finally:
            await redis.aclose()


@dataclass
class ServeProcess:
    roles: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.process.pid)


@dataclass
class LianyiProcesses:
    """``lianyi serve`` subprocesses, one per role group; ``env`` holds the LIANYI_ settings."""

    layout: Sequence[str]
    env: dict[str, str]
    log_dir: Path
    processes: list[ServeProcess] = field(default_factory=list)

    @property
    def callback_url(self) -> str:
        edge = next(p for p in self.processes if "edge" in p.roles.split(","))
        return f"http://127.0.0.1:{edge.port}/wecom/callback"

    async def start(self, *, within: float = 60.0) -> None:
        for index, roles in enumerate(self.layout):
            port = free_port()
            env = {**self.env, "LIANYI_INSTANCE_ID": f"bench-{index}-{roles.replace(',', '+')}"}
            log_path = self.log_dir / f"serve-{index}.log"
            with log_path.open("wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    str(LIANYI),
                    "serve",
                    "--roles",
                    roles,
                    "--port",
                    str(port),
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=stderr,
                )
            self.processes.append(ServeProcess(roles, port, proc, log_path))
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(self._wait_healthy(http, p, within) for p in self.processes))

    async def _wait_healthy(self, http: aiohttp.ClientSession, proc: ServeProcess, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        url = f"http://127.0.0.1:{proc.port}/healthz"
        while True:
            if proc.process.returncode is not None:
                tail = proc.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"lianyi serve --roles {proc.roles} exited ({proc.process.returncode}):\n{tail}")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"lianyi serve --roles {proc.roles} not healthy after {within:.0f} s")
            await asyncio.sleep(0.2)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far per role group."""
        return {p.roles: process_cpu_seconds(p.pid) for p in self.processes if p.process.returncode is None}

    async def stop(self) -> None:
        for proc in self.processes:
            if proc.process.returncode is None:
                proc.process.terminate()
        for proc in self.processes:
            try:
                await asyncio.wait_for(proc.process.wait(), 15)
            except TimeoutError:
                proc.process.kill()
                await proc.process.wait()
