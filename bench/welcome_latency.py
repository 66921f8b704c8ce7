"""Welcome latency: add_external_contact callback → send_welcome_msg received by the (emulated) WeCom.

    .venv/bin/python -m bench.welcome_latency [--rate 500] [--seconds 10] [--processes N]

What runs (see bench/README.md, "Welcome latency"):

* PostgreSQL: a scratch database, migrated with :func:`bot.runtime.migrate.upgrade`, dropped at the end. Redis: a
  unique key prefix (inbox streams, token cache, rate limits, wake-ups), deleted at the end.
* The WeCom emulator (default scenario: 8 dealers, 21 members) in this process, with WeCom's documented
  limits: 10,000 calls a minute and 150,000 an hour per API per corp, welcome codes valid once for 20 s.
* Lianyi as ``lianyi serve`` subprocesses, roles split by ``--processes`` (3 by default: ``edge``, ``worker``,
  ``dispatcher,scheduler``; on this 2-core machine it beat 2 processes), with
  ``LIANYI_API_RATE_PER_MINUTE=10000``.
* Phases: the emulator's own round trip for a direct ``send_welcome_msg``; a baseline open loop at
  ``--baseline-rate``; the target open loop at ``--rate`` for ``--seconds``. Each phase waits until every
  welcome code is accounted for and the outbox is idle before the next starts.

The figures are printed and written to ``bench/results/welcome_latency-<time>.json`` (and ``-latest``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import func
from sqlmodel import col, select

from bench.welcome_load import SendReport, direct_round_trip, run_open_loop, summary_ms, welcome_latencies
from bench.welcome_stack import LianyiProcesses, scratch_database, scratch_redis_prefix
from bot.emulator.callbacks import CallbackDriver
from bot.emulator.localstack import random_aes_key
from bot.emulator.scenario import build_state as build_emulator_state
from bot.emulator.scenario import load_scenario
from bot.emulator.server import start_emulator
from bot.emulator.state import EmulatorState
from bot.runtime.fullsync import FullSync
from bot.settings import Settings, load_settings
from bot.wecom.client import build_wecom_client
from scrm.db import SessionFactory, make_engine, make_session_factory, transaction
from scrm.models import CommandStatus, OutboxCommand
from scrm.sync.staff import upsert_dealer

RESULTS_DIR = Path(__file__).with_name("results")
SOP_DIR = Path(__file__).resolve().parents[1] / "sop_templates"
LAYOUTS = {
    1: ["edge,worker,dispatcher,scheduler"],
    2: ["edge,worker", "dispatcher,scheduler"],
    3: ["edge", "worker", "dispatcher,scheduler"],
    4: ["edge", "worker", "worker", "dispatcher,scheduler"],
}
FINAL = [s.value for s in CommandStatus if s.is_final]
WECOM_LIMIT_NOTE = (
    "WeCom allows 10,000 calls a minute (150,000 an hour) per API per corp: a 500/s burst of 10 s is 5,000 "
    "send_welcome_msg + 5,000 externalcontact/get, inside one minute's allowance, so Lianyi's limiter is set "
    "to the full 10,000/min (LIANYI_API_RATE_PER_MINUTE; default 6,000 keeps headroom for other apps) and the "
    "emulator keeps WeCom's documented limits. A sustained 500/s (30,000/min) would exceed WeCom itself."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.welcome_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=500.0, help="callbacks per second of the target phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each open-loop phase")
    p.add_argument("--baseline-rate", type=float, default=100.0, help="rate of the baseline phase (0 = skip)")
    p.add_argument("--processes", type=int, default=3, choices=sorted(LAYOUTS), help="lianyi serve processes")
    p.add_argument("--layout", default="", help="explicit role groups, e.g. 'edge,worker;dispatcher,scheduler'")
    p.add_argument("--direct-calls", type=int, default=200, help="direct send_welcome_msg calls (round trip)")
    p.add_argument("--settle-timeout", type=float, default=60.0, help="seconds to wait after a phase's last send")
    p.add_argument(
        "--pg-dsn", default=os.environ.get("LIANYI_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    p.add_argument("--redis-url", default=os.environ.get("LIANYI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return p.parse_args(argv)


def lianyi_env(values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update({f"LIANYI_{k.upper()}": v for k, v in values.items()})
    return env


async def command_counts(sessions: SessionFactory) -> dict[str, int]:
    """``kind:status`` → commands, over the whole outbox."""
    async with sessions() as session:
        rows = await session.exec(
            select(OutboxCommand.kind, OutboxCommand.status, func.count()).group_by(
                OutboxCommand.kind, OutboxCommand.status
            )
        )
        return {f"{kind}:{status}": int(n) for kind, status, n in rows.all()}


async def open_commands(sessions: SessionFactory) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(OutboxCommand).where(col(OutboxCommand.status).not_in(FINAL))
        return int((await session.exec(stmt)).one())


async def settle(state: EmulatorState, sessions: SessionFactory, codes: list[str], within: float) -> float:
    """Wait until every code was used or refused and no command is open; returns the seconds waited."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    wanted = set(codes)
    while loop.time() - started < within:
        used = sum(1 for c in wanted if state.counters.welcome_sends.get(c) or c in state.counters.welcome_rejections)
        if used == len(wanted) and await open_commands(sessions) == 0:
            break
        await asyncio.sleep(0.25)
    return loop.time() - started


async def welcome_stages(state: EmulatorState, sessions: SessionFactory, codes: list[str]) -> dict[str, Any]:
    """Where the time goes: code issued → command committed by the worker → welcome accepted by the emulator."""
    keys = [f"welcome:{code}" for code in codes]
    created: dict[str, float] = {}
    async with sessions() as session:
        for start in range(0, len(keys), 1000):
            stmt = select(OutboxCommand.idempotency_key, OutboxCommand.created_at).where(
                col(OutboxCommand.idempotency_key).in_(keys[start : start + 1000])
            )
            for key, at in (await session.exec(stmt)).all():
                created[key.removeprefix("welcome:")] = at.timestamp()
    sent_at = {w.code: w.at for w in state.counters.welcomes}
    to_command, to_sent = [], []
    for code in codes:
        record = state.welcome_codes.get(code)
        if record is None or code not in created:
            continue
        to_command.append((created[code] - record.issued_at) * 1000)
        if code in sent_at:
            to_sent.append((sent_at[code] - created[code]) * 1000)
    return {"issued_to_command": summary_ms(to_command), "command_to_sent": summary_ms(to_sent)}


def diff_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after) if after.get(k, 0) != before.get(k, 0)}


async def run_phase(
    name: str,
    rate: float,
    args: argparse.Namespace,
    state: EmulatorState,
    driver: CallbackDriver,
    sessions: SessionFactory,
    procs: LianyiProcesses,
) -> dict[str, Any]:
    before = await command_counts(sessions)
    cpu_before = procs.cpu_seconds()
    own_cpu = time.process_time()
    sent: SendReport = await run_open_loop(state, driver, rate=rate, seconds=args.seconds, tag=name[:8])
    waited = await settle(state, sessions, sent.codes, args.settle_timeout)
    latencies, outcome = welcome_latencies(state, sent.codes)
    stages = await welcome_stages(state, sessions, sent.codes)
    cpu_after = procs.cpu_seconds()
    commands = diff_counts(before, await command_counts(sessions))
    return {
        "phase": name,
        **sent.as_dict(),
        "settled_after_s": round(waited, 2),
        "welcome_latency": summary_ms(latencies),
        "stages": stages,
        **outcome,
        "commands": commands,
        "welcome_expired": commands.get("send_welcome:expired", 0),
        "welcome_failed": commands.get("send_welcome:failed", 0) + commands.get("send_welcome:dead", 0),
        "cpu_s": {roles: round(cpu_after.get(roles, 0) - s, 2) for roles, s in cpu_before.items()},
        "bench_process_cpu_s": round(time.process_time() - own_cpu, 2),
    }


async def prepare_database(settings: Settings, state: EmulatorState, redis_url: str) -> None:
    """The brand's dealer roster and a full sync (staff, tags), as a deployment has before callbacks flow."""
    engine = make_engine(settings.database_url)
    redis = aioredis.from_url(redis_url)
    try:
        sessions = make_session_factory(engine)
        async with transaction(sessions) as session:
            for dealer in state.dealers.values():
                await upsert_dealer(session, state.corp_id, dealer.code, name=dealer.name, city=dealer.city)
        async with aiohttp.ClientSession() as http:
            await FullSync(build_wecom_client(settings, http, redis), sessions, state.corp_id).run()
    finally:
        await redis.aclose()
        await engine.dispose()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    layout = [g.strip() for g in args.layout.split(";") if g.strip()] if args.layout else LAYOUTS[args.processes]
    scenario = load_scenario()
    state = build_emulator_state(scenario)
    app = scenario.apps[0]
    async with scratch_database(args.pg_dsn) as db_url, scratch_redis_prefix(args.redis_url) as prefix:
        emulator = await start_emulator(state)
        values = {
            "corp_id": state.corp_id,
            "callback_token": secrets.token_urlsafe(16)[:32],
            "callback_aes_key": random_aes_key(),
            "callback_max_age": "300",
            "secret_key": secrets.token_urlsafe(32),
            "app_secret": app.secret,
            "agent_id": str(app.agent_id),
            "wecom_api_base": emulator.base_url,
            "database_url": db_url,
            "redis_url": args.redis_url,
            "redis_prefix": prefix,
            "redis_accept_volatile": "true",  # a benchmark on the machine's Redis, which keeps nothing on disk
            "api_rate_per_minute": "10000",
            "sop_dir": str(SOP_DIR),
            "log_level": "WARNING",
            "log_json": "false",
        }
        settings = load_settings(**values)
        await prepare_database(settings, state, args.redis_url)
        log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"welcome-bench-{prefix[-10:]}"
        log_dir.mkdir(parents=True, exist_ok=True)
        procs = LianyiProcesses(layout, lianyi_env(values), log_dir)
        engine = make_engine(db_url)
        connector = aiohttp.TCPConnector(limit=512)
        try:
            await procs.start()
            sessions = make_session_factory(engine)
            async with aiohttp.ClientSession(connector=connector) as http:
                direct = await direct_round_trip(
                    state, emulator.base_url, app.secret, calls=args.direct_calls, http=http
                )
                driver = CallbackDriver(
                    procs.callback_url, settings.callback_token, settings.callback_aes_key, state.corp_id, http=http
                )
                phases = []
                if args.baseline_rate > 0:
                    phases.append(await run_phase("baseline", args.baseline_rate, args, state, driver, sessions, procs))
                phases.append(await run_phase("target", args.rate, args, state, driver, sessions, procs))
        finally:
            await procs.stop()
            await engine.dispose()
            await emulator.close()
    return {
        "bench": "welcome_latency",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "layout": layout,
        "settings": {"api_rate_per_minute": 10000, "emulator_api_limits": "10,000/min, 150,000/h per API"},
        "wecom_limits_note": WECOM_LIMIT_NOTE,
        "direct_send_welcome_round_trip": summary_ms(direct),
        "phases": phases,
        "emulator_counters": state.counters.as_dict(),
        "log_dir": str(log_dir),
    }


def print_report(result: dict[str, Any]) -> None:
    print(f"layout: {' | '.join(result['layout'])}")
    print(result["wecom_limits_note"])
    d = result["direct_send_welcome_round_trip"]
    print(
        f"emulator direct send_welcome_msg round trip: p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms ({d['count']} calls)"
    )
    header = f"{'phase':<9}{'rate':>7}{'sent/s':>8}{'codes':>7}{'welcomed':>9}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"
    header += f"{'expired':>8}{'failed':>7}{'cb fail':>8}{'lag p99':>8}"
    print(header)
    for ph in result["phases"]:
        w = ph["welcome_latency"]
        print(
            f"{ph['phase']:<9}{ph['target_rate']:>7.0f}{ph['achieved_rate']:>8.1f}{ph['codes_issued']:>7}"
            f"{ph['welcomes_sent']:>9}{w['p50_ms']:>8.0f}{w['p95_ms']:>8.0f}{w['p99_ms']:>8.0f}{w['max_ms']:>8.0f}"
            f"{ph['welcome_expired']:>8}{ph['welcome_failed']:>7}{ph['callbacks_failed']:>8}"
            f"{ph['schedule_lag']['p99_ms']:>8.1f}"
        )
    for ph in result["phases"]:
        a, b = ph["stages"]["issued_to_command"], ph["stages"]["command_to_sent"]
        print(
            f"{ph['phase']}: code issued → welcome command committed p50 {a['p50_ms']} / p99 {a['p99_ms']} ms; "
            f"command committed → welcome accepted p50 {b['p50_ms']} / p99 {b['p99_ms']} ms"
        )
    for ph in result["phases"]:
        print(
            f"{ph['phase']}: commands {json.dumps(ph['commands'])}; CPU s {json.dumps(ph['cpu_s'])}; "
            f"bench process {ph['bench_process_cpu_s']} s; callback ack p99 {ph['callback_ack']['p99_ms']} ms"
        )
    print("latency = emulator accepted send_welcome_msg − code issued (add_contact at send time), ms")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(bench(args))
    print_report(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, ensure_ascii=False, indent=2)
    (RESULTS_DIR / f"welcome_latency-{stamp}.json").write_text(text)
    (RESULTS_DIR / "welcome_latency-latest.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
