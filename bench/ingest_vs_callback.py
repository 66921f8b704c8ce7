"""Callback ack latency while one maximum ingest runs, on SQLite and on PostgreSQL.

    python -m bench.ingest_vs_callback [--rate 20] [--idle-seconds 10] [--records 5000] [--contacts 200]
        [--event unmodelled|add]
        [--batches default RECORDS:SECONDS ...] [--backends sqlite postgres] [--pg-dsn DSN]

What runs, per backend and per ``--batches`` value (each on a fresh stack):

* The database: a fresh SQLite file, or a scratch PostgreSQL database; migrated, removed at the end. No Redis:
  the inbox is the SQL table, as in a one-process pilot (on SQLite the inbox then shares the write lock with
  the ingest, which is the point).
* The WeCom emulator (default scenario) in this process; Lianyi in a subprocess (``bench.ingest_server``:
  ``create_app`` with every role, as ``lianyi serve`` runs it, plus a transaction timer), with
  ``LIANYI_INGEST_BATCH_RECORDS`` / ``_SECONDS`` as the run asks (``5000:60``: transactions of up to a minute,
  close to the one-transaction ingest before batching: the comparison).
* **Contacts**: ``--contacts`` ``add_external_contact`` callbacks at ``--rate``; the worker makes them contacts
  (and sends welcomes). The bench waits until all exist and the inbox is empty.
* **Idle** (the baseline of the same run): callbacks at ``--rate`` a second for ``--idle-seconds``. ``--event``
  chooses them: ``unmodelled`` (default: an ``enter_agent`` event Lianyi does not model; verified, decrypted,
  stored in the inbox, acknowledged, and only logged and settled by the worker: the ack path and the inbox's own
  writes, with no WeCom API work that a busy worker would pile up) or ``add`` (more contacts: the worker calls
  the emulator, sends welcomes, enrols SOPs).
* **During ingest**: one ``POST /ingest/messages`` of ``--records`` customer and staff messages from those
  contacts (texts that score, so the whole intent pipeline runs: signals, score, level, stage, tags, leads),
  while the same callbacks go on at the same rate until the ingest has answered.
* Ack latency is measured open loop, from each callback's *scheduled* send time to its answer (one attempt,
  no client timeout short of 120 s), so a stalled server cannot hide behind a slowed sender.

Printed per run: ack p50/p95/p99/max idle and during the ingest, the ingest's duration, its transactions and
the longest one (``begin`` → ``commit`` on the server's engine). JSON in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func
from sqlmodel import select

from bench.ingest_server import server
from bench.welcome_load import summary_ms, welcome_staff
from bench.welcome_stack import scratch_database
from bot.emulator.callbacks import CallbackDriver
from bot.emulator.localstack import random_aes_key
from bot.emulator.scenario import build_state, load_scenario
from bot.emulator.server import start_emulator
from bot.emulator.state import EmulatorState
from bot.runtime import migrate
from bot.runtime.fullsync import FullSync
from bot.settings import Settings, load_settings
from bot.wecom.client import build_wecom_client
from scrm.channel import build_state as build_channel_state
from scrm.db import make_engine, make_session_factory, write_transaction
from scrm.models import Contact, InboxEvent, InboxStatus
from scrm.sync.staff import upsert_dealer

RESULTS_DIR = Path(__file__).with_name("results")
SOP_DIR = Path(__file__).resolve().parents[1] / "sop_templates"
INGEST_TOKEN = secrets.token_hex(24)
TEXTS = (
    "这车落地价多少",
    "周末可以预约试驾吗",
    "贷款首付最低多少",
    "旧车置换有补贴吗",
    "现在订车什么时候能提车",
    "顶配和次顶配配置差在哪",
    "好的谢谢",
    "你好",
    "有没有现车，想这个月定下来",
    "保养一次多少钱",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.ingest_vs_callback", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=20.0, help="callbacks per second, idle and during the ingest")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="length of the idle baseline")
    p.add_argument("--records", type=int, default=5000, help="messages in the one ingest request")
    p.add_argument("--contacts", type=int, default=200, help="customers added first; the ingest's messages are theirs")
    p.add_argument(
        "--event",
        choices=["unmodelled", "add"],
        default="unmodelled",
        help="callbacks of the idle and ingest phases: an unmodelled event (edge + inbox only) or add_external_contact",
    )
    p.add_argument(
        "--batches",
        nargs="+",
        default=["default"],
        help="one run per value: 'default', or RECORDS:SECONDS for LIANYI_INGEST_BATCH_RECORDS/_SECONDS"
        " (5000:60 = the whole request in one transaction, as before batching)",
    )
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    p.add_argument(
        "--pg-dsn", default=os.environ.get("LIANYI_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    return p.parse_args(argv)


@asynccontextmanager
async def fresh_database(backend: str, pg_dsn: str) -> AsyncIterator[str]:
    if backend == "postgres":
        async with scratch_database(pg_dsn) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as folder:
        url = f"sqlite+aiosqlite:///{folder}/lianyi.db"
        await asyncio.to_thread(migrate.upgrade, url)
        yield url


def server_values(state: EmulatorState, api_base: str, database_url: str, batch: str) -> dict[str, str]:
    app = load_scenario().apps[0]
    values = {
        "corp_id": state.corp_id,
        "callback_token": secrets.token_urlsafe(16)[:32],
        "callback_aes_key": random_aes_key(),
        "app_secret": app.secret,
        "agent_id": str(app.agent_id),
        "wecom_api_base": api_base,
        "database_url": database_url,
        "redis_url": "",
        "sop_dir": str(SOP_DIR),
        "ingest_token": INGEST_TOKEN,
        "log_level": "WARNING",
        "log_json": "false",
    }
    if "secret_key" in Settings.model_fields:  # required once accounts land; a fresh one per run
        values["secret_key"] = secrets.token_urlsafe(48)
    if batch != "default":
        records, _, seconds = batch.partition(":")
        values.update(ingest_batch_records=records, ingest_batch_seconds=seconds or "60")
    return values


async def prepare_database(settings: Settings, state: EmulatorState) -> None:
    """The dealer roster and a full sync (staff, tags), as a deployment has before callbacks flow."""
    engine = make_engine(settings.database_url)
    try:
        sessions = make_session_factory(engine)
        async with write_transaction(sessions) as session:
            for dealer in state.dealers.values():
                await upsert_dealer(session, state.corp_id, dealer.code, name=dealer.name, city=dealer.city)
        async with aiohttp.ClientSession() as http:
            await FullSync(build_wecom_client(settings, http, None), sessions, state.corp_id).run()
    finally:
        await engine.dispose()


FieldsMaker = Callable[[], dict[str, Any]]


def add_contact_fields(state: EmulatorState) -> FieldsMaker:
    """add_external_contact: the emulator adds a customer to a member (welcome code, channel state naming a
    dealer); the worker fetches the contact, sends the welcome, enrols SOPs."""
    staff = itertools.cycle(welcome_staff(state))
    dealers = itertools.cycle(sorted(state.dealers))

    def make() -> dict[str, Any]:
        channel_state = build_channel_state(channel="qr", dealer=next(dealers), campaign="ingest")
        return dict(state.add_contact(next(staff), state=channel_state))

    return make


def unmodelled_fields(state: EmulatorState, run: str) -> FieldsMaker:
    """An event Lianyi does not model (enter_agent): verified, decrypted, stored in the inbox, acknowledged; the
    worker only logs and settles it. The edge and the inbox at their cheapest."""
    counter = itertools.count()

    def make() -> dict[str, Any]:
        return {
            "ToUserName": state.corp_id,
            "FromUserName": "zhangwei",
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "enter_agent",
            "EventKey": f"{run}-{next(counter)}",
            "AgentID": 1000002,
        }

    return make


async def open_loop(
    driver: CallbackDriver, rate: float, make_fields: FieldsMaker, until: Callable[[], bool]
) -> tuple[list[float], int, list[dict[str, Any]]]:
    """A callback every 1/rate s until ``until()``: (ack ms from the scheduled send moment, failed callbacks, the
    fields sent)."""
    loop = asyncio.get_running_loop()
    acks: list[float] = []
    failures = 0
    sent: list[dict[str, Any]] = []

    async def one(fields: dict[str, Any], due: float) -> None:
        nonlocal failures
        result = await driver.send(fields)
        if result.ok:
            acks.append((loop.time() - due) * 1000)
        else:
            failures += 1

    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.05
    for i in itertools.count():
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        if until():
            break
        sent.append(make_fields())
        tasks.append(loop.create_task(one(sent[-1], due)))
    await asyncio.gather(*tasks)
    return acks, failures, sent


def ingest_body(contacts: list[tuple[str, str]], records: int, run: str) -> bytes:
    """``records`` messages from (external_userid, staff userid) pairs in turn; every 10th from the staff member."""
    now = int(time.time())
    lines = []
    for n in range(records):
        external_userid, userid = contacts[n % len(contacts)]
        record: dict[str, Any] = {
            "msgid": f"bench-{run}-{n:06d}",
            "sent_at": now - (records - n),
            "external_userid": external_userid,
            "text": TEXTS[n % len(TEXTS)],
        }
        if n % 10 == 9:
            record.update(sender_type="staff", userid=userid, text="您好，我是您的专属顾问")
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines).encode()


async def settle(database_url: str, contacts: int, within: float = 300.0) -> float:
    """Wait until ``contacts`` contacts exist and the inbox has nothing pending; returns the seconds waited."""
    engine = make_engine(database_url)
    started = time.monotonic()
    pending = select(func.count()).select_from(InboxEvent).where(InboxEvent.status == InboxStatus.PENDING.value)
    try:
        while time.monotonic() - started < within:
            async with make_session_factory(engine)() as session:
                known = (await session.exec(select(func.count()).select_from(Contact))).one()
                if known >= contacts and (await session.exec(pending)).one() == 0:
                    break
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()
    return time.monotonic() - started


async def run_one(backend: str, batch: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """One fresh stack: contacts, then idle callbacks (the baseline), then callbacks during one ingest."""
    state = build_state(load_scenario())
    run = secrets.token_hex(3)
    async with fresh_database(backend, args.pg_dsn) as database_url, await start_emulator(state) as emulator:
        values = server_values(state, emulator.base_url, database_url, batch)
        settings = load_settings(**values)
        await prepare_database(settings, state)
        log_path = log_dir / f"{backend}-{batch.replace(':', '_')}-{run}.log"
        connector = aiohttp.TCPConnector(limit=256)
        async with server(values, log_path) as base, aiohttp.ClientSession(connector=connector) as http:
            driver = CallbackDriver(
                base + "/wecom/callback",
                settings.callback_token,
                settings.callback_aes_key,
                state.corp_id,
                http=http,
                timeout=120.0,
                retries=1,
            )
            count = itertools.count()
            _, setup_failed, added = await open_loop(
                driver, args.rate, add_contact_fields(state), lambda: next(count) >= args.contacts
            )
            settled = await settle(database_url, len(added))
            event = add_contact_fields(state) if args.event == "add" else unmodelled_fields(state, run)
            idle_end = time.monotonic() + args.idle_seconds
            idle_acks, idle_failed, _ = await open_loop(driver, args.rate, event, lambda: time.monotonic() >= idle_end)
            await settle(database_url, len(added))
            async with http.post(base + "/_bench/transactions"):
                pass
            contacts = [(str(f["ExternalUserID"]), str(f["UserID"])) for f in added]
            ingest = await during_ingest(http, base, driver, event, args, contacts, run)
            async with http.get(base + "/_bench/transactions") as response:
                transactions = await response.json()
    return {
        "backend": backend,
        "event": args.event,
        "batch_records": settings.ingest_batch_records,
        "batch_seconds": settings.ingest_batch_seconds,
        "contacts": len(added),
        "contacts_failed": setup_failed,
        "contacts_settled_after_s": round(settled, 2),
        "idle": {**summary_ms(idle_acks), "failed": idle_failed},
        **ingest,
        "transactions": transactions,
    }


async def during_ingest(
    http: aiohttp.ClientSession,
    base: str,
    driver: CallbackDriver,
    event: FieldsMaker,
    args: argparse.Namespace,
    contacts: list[tuple[str, str]],
    run: str,
) -> dict[str, Any]:
    body = ingest_body(contacts, args.records, run)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/x-ndjson"}
    started = time.monotonic()

    async def post() -> tuple[int, Any, float]:
        async with http.post(
            base + "/ingest/messages", data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=3600)
        ) as response:
            answer = await response.json()
        return response.status, answer, time.monotonic() - started

    ingest = asyncio.create_task(post())
    acks, failed, _ = await open_loop(driver, args.rate, event, ingest.done)
    status, answer, seconds = await ingest
    return {
        "during_ingest": {**summary_ms(acks), "failed": failed},
        "ingest": {"status": status, "answer": answer, "seconds": round(seconds, 2), "body_bytes": len(body)},
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "ingest-bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for backend in args.backends:
        for batch in args.batches:
            runs.append(await run_one(backend, batch, args, log_dir))
            print_run(runs[-1])
    return {
        "bench": "ingest_vs_callback",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rate": args.rate,
        "records": args.records,
        "runs": runs,
        "log_dir": str(log_dir),
    }


def print_run(run: dict[str, Any]) -> None:
    tx = run["transactions"]
    ingest = run["ingest"]
    print(
        f"{run['backend']}, batches of ≤ {run['batch_records']} records / {run['batch_seconds']} s:"
        f" ingest {ingest['status']} {json.dumps(ingest['answer'])} in"
        f" {ingest['seconds']} s; {tx['ingest_transactions']} ingest transactions, longest"
        f" {tx['ingest_longest_ms']} ms (others: {tx['other_transactions']}, longest {tx['other_longest_ms']} ms)"
    )
    for ms, first in tx.get("other_longest", [])[:3]:
        print(f"  long other transaction {ms:>9} ms: {first}")
    for phase in ("idle", "during_ingest"):
        f = run[phase]
        print(
            f"  ack {phase:<14} n={f['count']:<4} p50 {f['p50_ms']:>8} p95 {f['p95_ms']:>8} p99 {f['p99_ms']:>8}"
            f" max {f['max_ms']:>8} ms  failed {f['failed']}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(bench(args))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, ensure_ascii=False, indent=2)
    (RESULTS_DIR / f"ingest_vs_callback-{stamp}.json").write_text(text)
    (RESULTS_DIR / "ingest_vs_callback-latest.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
