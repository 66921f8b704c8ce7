"""A worker process for the crash test (tests/worker/test_crash.py); run as a script.

Its ``contact.added`` handler writes one row per event into ``crash_effects`` (committed) and prints
``handled <dedup key>``. With ``--block-seq N`` it instead prints ``blocked <dedup key>`` for events whose
State is ``seqN`` and hangs there, holding the delivery, until the process is killed. SIGTERM stops it
gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import redis.asyncio as aioredis
from sqlalchemy import text

from bot.edge.events import ContactAdded, WeComEvent
from bot.inbox.base import Inbox
from bot.inbox.redis_streams import RedisInbox
from bot.inbox.sql import SqlInbox
from bot.redis_keys import RedisKeys
from bot.runtime.router import HandlerContext, Router
from bot.runtime.worker import Worker
from bot.settings import load_settings
from scrm.db import make_engine, make_session_factory, transaction
from scrm.db_types import utcnow
from scrm.services import Services


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sql", "redis"], required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--redis-prefix", required=True)
    parser.add_argument("--lease", type=float, required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--block-seq", type=int, default=None)
    return parser.parse_args()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    engine = make_engine(args.database_url)
    sessions = make_session_factory(engine)
    client = aioredis.from_url(args.redis_url)
    inbox: Inbox
    if args.backend == "redis":
        inbox = RedisInbox(client, RedisKeys(args.redis_prefix), lease_seconds=args.lease)
    else:
        inbox = SqlInbox(sessions, lease_seconds=args.lease)
    settings = load_settings(
        corp_id="wx5823bf96d3bd56c7",
        callback_token="QDG6eK",
        callback_aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        secret_key="crash-worker-secret-key-0123456789abcdefghijklmnop",
        database_url=args.database_url,
    )
    router = Router()
    hang_forever = asyncio.Event()

    @router.on("contact.added")
    async def record(event: WeComEvent, ctx: HandlerContext) -> None:
        assert isinstance(event, ContactAdded)
        seq = int(event.state.removeprefix("seq"))
        if seq == args.block_seq:
            say(f"blocked {event.dedup_key}")
            await hang_forever.wait()
        async with transaction(ctx.session_factory) as session:
            conn = await session.connection()
            await conn.execute(
                text("INSERT INTO crash_effects (dedup_key, contact, seq, pid) VALUES (:k, :c, :s, :p)"),
                {"k": event.dedup_key, "c": event.external_userid, "s": seq, "p": os.getpid()},
            )
        say(f"handled {event.dedup_key}")

    ctx = HandlerContext(
        session_factory=sessions,
        settings=settings,
        now=utcnow,
        notify_outbox=lambda: None,
        services=Services.build(settings.sop_dir),
    )
    worker = Worker(
        inbox,
        router,
        ctx,
        consumer=args.consumer,
        max_attempts=5,
        concurrency=16,
        claim_block_ms=100,
        heartbeat_seconds=args.lease / 3,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("ready")
    try:
        await worker.run(stop)
    finally:
        await inbox.close()
        await client.aclose()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
