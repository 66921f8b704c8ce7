"""A redis-server of the test's own, on a free port with its data in a temporary folder, that a test can kill and
start again on the same folder (what a Redis restart is). The machine's shared Redis is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
VOLATILE = ("--appendonly", "no", "--save", "")  # how the machine's Redis runs (SERVICES.md)
AOF_EVERYSEC = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, folder: Path, config: tuple[str, ...]) -> None:
        self.folder = folder
        self.config = config
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start on the same port and folder (a restart loads what the server kept there) and wait until it
        answers PING (not while it is still loading its AOF)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "redis.log"),
            *self.config,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.from_url(self.url)
        try:
            async with asyncio.timeout(20):
                while True:
                    if self.process.returncode is not None:
                        log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
                    try:
                        await client.ping()
                        return
                    except (RedisConnectionError, BusyLoadingError):
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL: no shutdown save, no final fsync; only what the server already handed to the OS survives."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.process = None

    async def shutdown(self) -> None:
        """SHUTDOWN NOSAVE: a clean stop (the AOF is flushed and fsynced), no RDB snapshot is written."""
        client = aioredis.from_url(self.url)
        try:
            with contextlib.suppress(RedisConnectionError):
                await client.shutdown(nosave=True)
        finally:
            await client.aclose()
        if self.process is not None:
            await self.process.wait()
        self.process = None

    async def restart(self, *, clean: bool = False) -> None:
        """Stop (SIGKILL, or SHUTDOWN when ``clean``) and start again on the same folder."""
        await (self.shutdown() if clean else self.kill())
        await self.start()


RedisServers = Callable[[tuple[str, ...]], Awaitable[RedisServer]]


@asynccontextmanager
async def redis_servers(base: Path) -> AsyncIterator[RedisServers]:
    """Start servers with ``await start(config)``; on exit every one is killed and its folder (in ``base``) removed."""
    started: list[RedisServer] = []

    async def start(config: tuple[str, ...]) -> RedisServer:
        server = RedisServer(base / f"redis-{len(started)}", config)
        started.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.kill()
            shutil.rmtree(server.folder, ignore_errors=True)
