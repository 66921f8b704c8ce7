"""The two servers under test, each run in its own process: ``python -m bench.servers edge|bare``.

- ``edge``: the real callback edge (:class:`bot.edge.callback.CallbackEdge`) over the Redis Streams inbox, with
  the same logging and aiohttp settings as ``lianyi serve`` (JSON log lines at INFO, no access log).
- ``bare``: the floor: an aiohttp app whose POST /wecom/callback reads the body and answers an empty 200,
  with the same logging and aiohttp settings.

The process prints ``READY <port>`` on stdout once it listens, and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from bench.load import AES_KEY, CORP_ID, PATH, TOKEN
from bot.edge.callback import CallbackEdge
from bot.inbox.redis_streams import RedisInbox
from bot.logs import configure_logging
from bot.redis_keys import RedisKeys
from bot.settings import Settings, load_settings

SOP_DIR = Path(__file__).resolve().parents[1] / "sop_templates"  # the settings check it exists


def bench_settings(redis_url: str, prefix: str, partitions: int) -> Settings:
    """Settings of the benchmark corp; the timestamp window is wide so a long run never goes stale."""
    return load_settings(
        corp_id=CORP_ID,
        callback_token=TOKEN,
        callback_aes_key=AES_KEY,
        callback_max_age=3600,
        secret_key=secrets.token_urlsafe(32),
        redis_url=redis_url,
        redis_prefix=prefix,
        inbox_partitions=partitions,
        log_level="INFO",
        log_json=True,
        sop_dir=str(SOP_DIR),
    )


async def _bare_callback(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200, body=b"")


def build_app(kind: str, settings: Settings) -> tuple[web.Application, aioredis.Redis | None]:
    app = web.Application(client_max_size=settings.max_body_bytes)
    if kind == "bare":
        app.router.add_post(PATH, _bare_callback)
        return app, None
    redis = aioredis.from_url(settings.redis_url)
    inbox = RedisInbox(redis, RedisKeys(settings.redis_prefix), partitions=settings.inbox_partitions)
    CallbackEdge(settings, inbox).add_routes(app, PATH)
    return app, redis


async def serve(kind: str, settings: Settings, port: int) -> None:
    app, redis = build_app(kind, settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    if redis is not None:
        await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["edge", "bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args(argv)
    settings = bench_settings(args.redis_url, args.prefix, args.partitions)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    asyncio.run(serve(args.kind, settings, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
