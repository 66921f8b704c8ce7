"""Campaign throughput: a 1vN campaign to 10,000 groups of 500 owners at WeCom's rate limit R, in real time.

    .venv/bin/python -m bench.campaign_throughput [--rate 250] [--owners 500] [--groups-per-owner 20]
        [--skip-baseline] [--pg-dsn DSN]

Issue 6's acceptance: the campaign completes in ≤ 1.1 × the least time R allows. N batches (one per owner: same
content, 20 groups each) are N add_msg_template calls; a sliding window of R calls a minute lets R go at once
and R more a minute later, so the minimum from the first call to the last is ``(ceil(N / R) − 1) × 60 s``
(``N / R`` minutes is printed too, for reference). "Completes" = the emulator accepting the last
add_msg_template (``GroupMsg.created_at``), measured from the moment planning started.

What runs (see bench/README.md, "Campaign throughput"):

* PostgreSQL: a scratch database, migrated, dropped at the end; one corp, one dealer, ``--owners`` staff
  members with ``--groups-per-owner`` active customer groups each (one customer per group), written in bulk.
* The WeCom emulator on a real socket, holding the same staff and groups, with
  ``externalcontact/add_msg_template`` limited to R calls a minute (45009 and a 60 s block beyond), owners
  confirming at once.
* Lianyi in this process as ``lianyi serve`` runs it: a real :class:`~bot.outbox.dispatcher.OutboxDispatcher`
  (``run(stop)``, default slots and poll interval, real clock) over the real WeCom client with its in-process
  limiter at ``LIANYI_API_RATE_PER_MINUTE`` = R; the campaign is saved and planned through
  :func:`scrm.campaigns.service.run_due` at ``LIANYI_CAMPAIGN_CALLS_PER_MINUTE`` = R, with an open contact
  policy (no quiet hours or caps: the run must not depend on the time of day).
* **Baseline** in the same run: a second emulator with the same world and limit, and a fresh client (own
  token, own limiter at R) sending the very bodies the outbox sent, one after the other in a bare loop —
  no database, outbox or planner. The difference is what the campaign machinery adds to a paced loop.
* Afterwards: outcomes moved onto the batches (:func:`scrm.campaigns.tracking.sync_batches`), then one
  WeCom task per batch (msgid, creator, recipients), every group covered once, calls answered 45009, commands
  attempted more than once; and the planner's read side (:func:`scrm.campaigns.planner.build_plan` alone:
  audience, quota counts, rendering, batching) timed on the same data.

Figures are printed and written to ``bench/results/campaign_throughput-<time>.json`` (and ``-latest``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import platform
import secrets
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from sqlalchemy import func, insert
from sqlmodel import col, select

from bench.sop_due_selection import scratch_database
from bot.emulator.limits import ApiRateLimiter
from bot.emulator.localstack import random_aes_key
from bot.emulator.server import start_emulator
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.outbox.executors import _msg_template_body
from bot.settings import Settings, load_settings
from bot.wecom.client import WeComClient
from bot.wecom.errors import RateLimitedError
from bot.wecom.ratelimit import InProcessRateLimiter, Rate
from bot.wecom.token import InProcessTokenCache
from scrm.campaigns.planner import build_plan
from scrm.campaigns.service import run_due, save_campaign, spec_of
from scrm.campaigns.spec import CampaignSpec
from scrm.campaigns.tracking import sync_batches
from scrm.contact_policy import Caps, Policy, QuietHours
from scrm.db import SessionFactory, make_engine, make_session_factory, transaction
from scrm.models import Campaign, CampaignBatch, CommandStatus, CustomerGroup, Dealer, OutboxCommand, Staff
from scrm.models.accounts import User, UserRole
from scrm.rows import ensure_corp

RESULTS_DIR = Path(__file__).with_name("results")
CORP = "wwbenchcampaign"
SECRET = "bench-campaign-secret"
AGENT_ID = 1000002
API = "externalcontact/add_msg_template"
DEALER = "D000"
OPEN_POLICY = Policy(quiet_hours=QuietHours(start="00:00", end="00:00"), caps=Caps(per_day=0, per_week=0))
SPEC = """\
code: bench_friday
name: 周末试驾活动
chat_type: group
content:
  text: "{{ dealer.name }}周末试驾日，欢迎到店！"
schedule: {now: true}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.campaign_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rate", type=int, default=250, help="R: add_msg_template calls a minute (emulator, client, planner)"
    )
    p.add_argument(
        "--wecom-rate", type=int, default=0, help="experiment: the emulator's own limit if not R (default: R)"
    )
    p.add_argument("--owners", type=int, default=500, help="group owners (one batch each)")
    p.add_argument("--groups-per-owner", type=int, default=20)
    p.add_argument("--skip-baseline", action="store_true", help="no bare paced loop")
    p.add_argument(
        "--warm-token",
        action="store_true",
        help="fetch the access token before planning (as a long-running process holds one); default: cold",
    )
    p.add_argument("--timeout", type=float, default=0.0, help="give up waiting after this many seconds (0 = auto)")
    p.add_argument(
        "--pg-dsn", default=os.environ.get("LIANYI_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    p.add_argument("--output", type=Path, default=None)
    return p.parse_args(argv)


def owner_id(n: int) -> str:
    return f"owner{n:04d}"


def chat_id(owner: int, n: int) -> str:
    return f"wr{owner:04d}x{n:04d}"


def minimum_seconds(calls: int, rate: int) -> float:
    return (math.ceil(calls / rate) - 1) * 60.0


class RecordedLimits(ApiRateLimiter):
    """The emulator's limiter, also noting when each add_msg_template reached it and whether it passed."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, bool]] = []

    def allow(self, api: str, now: float) -> bool:
        allowed = super().allow(api, now)
        if api == API:
            self.arrivals.append((now, allowed))
        return allowed


class RecordedLimiter(InProcessRateLimiter):
    """Our client's in-process limiter (unchanged), also noting when it let an add_msg_template go."""

    def __init__(self) -> None:
        super().__init__()
        self.granted: list[float] = []

    async def try_acquire_many(self, rates: Sequence[Rate]) -> float:
        wait = await super().try_acquire_many(rates)
        if wait <= 0 and any(rate.bucket.endswith(API) for rate in rates):
            self.granted.append(self._clock())
        return wait


def make_client(settings: Settings, http: aiohttp.ClientSession) -> tuple[WeComClient, RecordedLimiter]:
    """What :func:`bot.wecom.client.build_wecom_client` builds without Redis, with the limiter observed."""
    limiter = RecordedLimiter()
    client = WeComClient(
        http=http,
        api_base=settings.wecom_api_base,
        corp_id=settings.corp_id,
        secret=settings.app_secret,
        tokens=InProcessTokenCache(),
        limiter=limiter,
        settings=settings,
    )
    return client, limiter


# ---- the world -----------------------------------------------------------------------------------------------


def build_emulator(args: argparse.Namespace) -> EmulatorState:
    """The emulated corp: one dealer, the owners, their groups (one customer each), add_msg_template at R."""
    state = EmulatorState(CORP, seed=7)
    state.add_app(SECRET, AGENT_ID)
    state.add_dealer(DEALER, "经销商000", "北京")
    for o in range(args.owners):
        userid = owner_id(o)
        state.add_staff(userid, f"群主{o:04d}", DEALER)
        for g in range(args.groups_per_owner):
            customer = state.add_contact(userid, name=f"客户{o}-{g}")["ExternalUserID"]
            state.create_group(userid, f"车友群{o:04d}-{g:04d}", [customer], chat_id=chat_id(o, g))
    state.groupmsg_auto_confirm = True
    state.rate_limits = RecordedLimits()
    state.rate_limits.set_limit(API, per_minute=args.wecom_rate or args.rate)
    return state


async def seed_database(factory: SessionFactory, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    async with transaction(factory) as session:
        await ensure_corp(session, CORP)
        session.add(Dealer(corp_id=CORP, code=DEALER, name="经销商000", city="北京"))
        await session.flush()
        dealer_id = (await session.exec(select(Dealer.id).where(Dealer.corp_id == CORP))).one()
        conn = await session.connection()
        staff = [
            {
                "corp_id": CORP,
                "userid": owner_id(o),
                "name": f"群主{o:04d}",
                "dealer_id": dealer_id,
                "role": "advisor",
                "has_contact_permission": True,
                "duty_hours": "",
                "capacity": 20,
                "active": True,
                "created_at": now,
                "updated_at": now,
            }
            for o in range(args.owners)
        ]
        await conn.execute(insert(Staff.__table__), staff)  # type: ignore[attr-defined]
        groups: list[dict[str, Any]] = [
            {
                "corp_id": CORP,
                "chat_id": chat_id(o, g),
                "name": f"车友群{o:04d}-{g:04d}",
                "owner_userid": owner_id(o),
                "dealer_id": dealer_id,
                "status": "active",
                "member_version": "",
                "member_count": 2,
                "notice": "",
                "tags": [],
                "wecom_created_at": now,
                "updated_at": now,
            }
            for o in range(args.owners)
            for g in range(args.groups_per_owner)
        ]
        await conn.execute(insert(CustomerGroup.__table__), groups)  # type: ignore[attr-defined]


def make_settings(
    args: argparse.Namespace, api_base: str, database_url: str = "sqlite+aiosqlite:///unused.db"
) -> Settings:
    return load_settings(
        corp_id=CORP,
        callback_token="benchtoken",
        callback_aes_key=random_aes_key(),
        secret_key=secrets.token_urlsafe(32),
        app_secret=SECRET,
        agent_id=AGENT_ID,
        wecom_api_base=api_base,
        database_url=database_url,
        redis_url="",
        api_rate_per_minute=args.rate,
        campaign_calls_per_minute=args.rate,
        log_json=False,
    )


class Warnings(logging.Handler):
    """Keeps the WARNING+ records of the run (retries, 45009 blocks) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def summary(self) -> dict[str, Any]:
        return {
            "count": len(self.records),
            "messages": dict(Counter(r.getMessage()[:80] for r in self.records).most_common(10)),
        }


@contextmanager
def collected_warnings() -> Iterator[Warnings]:
    handler = Warnings()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


# ---- what the emulator saw -----------------------------------------------------------------------------------


def timeline(state: EmulatorState, limiter: RecordedLimiter, started: float, rate: int) -> dict[str, Any]:
    """When the emulator accepted each add_msg_template, relative to ``started``; and, at the first window edge,
    when our limiter let calls go against when WeCom counted them (the 45009 evidence)."""
    created = sorted(msg.created_at for msg in state.group_msgs.values())
    windows = [created[i : i + rate] for i in range(0, len(created), rate)]
    gaps = [later - earlier for earlier, later in zip(created, created[rate:], strict=False)]
    assert isinstance(state.rate_limits, RecordedLimits)
    arrivals = [at for at, _ in state.rate_limits.arrivals]
    granted = limiter.granted

    def rel(values: list[float]) -> list[float]:
        return [round(v - started, 4) for v in values]

    return {
        "tasks": len(created),
        "first_s": round(created[0] - started, 3) if created else None,
        "last_s": round(created[-1] - started, 3) if created else None,
        "windows": [
            {"first_s": round(w[0] - started, 3), "last_s": round(w[-1] - started, 3), "calls": len(w)} for w in windows
        ],
        # call i and call i + R must be ≥ 60 s apart at WeCom; the smallest such gap shows how close we cut it
        "min_gap_r_calls_s": round(min(gaps), 4) if gaps else None,
        "calls_45009": state.counters.api_errors[(API, 45009)],
        "api_calls": dict(state.counters.api_calls),
        # pauses over 100 ms between consecutive calls of the first window: (call index, ms)
        "first_window_pauses": [
            (i + 1, round((b - a) * 1000)) for i, (a, b) in enumerate(itertools.pairwise(created[:rate])) if b - a > 0.1
        ],
        "refused_at_s": rel([at for at, allowed in state.rate_limits.arrivals if not allowed]),
        "edge": {
            "client_granted_first_s": rel(granted[:6]),
            "wecom_counted_first_s": rel(arrivals[:6]),
            "client_granted_after_r_s": rel(granted[rate : rate + 6]),
            "wecom_counted_after_r_s": rel(arrivals[rate : rate + 6]),
        },
    }


def ratios(elapsed: float | None, calls: int, rate: int) -> dict[str, Any]:
    minimum = minimum_seconds(calls, rate)
    return {
        "minimum_s": minimum,
        "n_over_r_min": round(calls / rate, 3),
        "elapsed_s": None if elapsed is None else round(elapsed, 3),
        "ratio": None if elapsed is None or minimum <= 0 else round(elapsed / minimum, 4),
        "ratio_vs_n_over_r": None if elapsed is None else round(elapsed / (calls / rate * 60), 4),
        "overhead_s": None if elapsed is None else round(elapsed - minimum, 3),
    }


# ---- the campaign --------------------------------------------------------------------------------------------


async def pending_commands(factory: SessionFactory) -> int:
    final = [s.value for s in CommandStatus if s.is_final]
    async with factory() as session:
        return int(
            (
                await session.exec(
                    select(func.count()).where(
                        OutboxCommand.kind == "add_msg_template", col(OutboxCommand.status).not_in(final)
                    )
                )
            ).one()
        )


async def run_campaign(
    factory: SessionFactory, state: EmulatorState, api_base: str, url: str, args: argparse.Namespace
) -> dict[str, Any]:
    settings = make_settings(args, api_base, url)
    timeout = args.timeout or minimum_seconds(args.owners, args.rate) + 240
    async with aiohttp.ClientSession() as http:
        client, limiter = make_client(settings, http)
        dispatcher = OutboxDispatcher(
            factory, client, settings, instance_id="bench", lease_seconds=settings.outbox_lease_seconds
        )
        if args.warm_token:
            await client.get_follow_user_list()
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop), name="bench-dispatcher")
        cpu_started = time.process_time()
        started = time.time()
        runs = await run_due(factory, CORP, datetime.now(UTC), OPEN_POLICY, calls_per_minute=args.rate)
        planned = time.time()
        dispatcher.wake()  # as the scheduler does after every tick
        gave_up = False
        while await pending_commands(factory):
            if time.time() - started > timeout:
                gave_up = True
                break
            await asyncio.sleep(0.2)
        drained = time.time()
        stop.set()
        await running
        cpu = time.process_time() - cpu_started
    [run] = runs
    line = timeline(state, limiter, started, args.rate)
    checks = await check_batches(factory, state)
    return {
        "plan_s": round(planned - started, 3),
        "run": {"targets": run.targets, "skipped": run.skipped, "batches": run.batches},
        "drained_s": round(drained - started, 3),
        "gave_up": gave_up,
        "process_cpu_s": round(cpu, 2),
        "timeline": line,
        **ratios(line["last_s"], run.batches, args.rate),
        "checks": checks,
        "commands": await command_summary(factory),
    }


async def check_batches(factory: SessionFactory, state: EmulatorState) -> dict[str, Any]:
    """Outcomes onto the batches, then batches against the emulator's tasks and coverage."""
    while await sync_batches(factory, datetime.now(UTC)):
        pass
    async with factory() as session:
        batches = list((await session.exec(select(CampaignBatch))).all())
        targets = int((await session.exec(select(func.coalesce(func.sum(CampaignBatch.target_count), 0)))).one())
    tasks = state.group_msgs
    by_msgid = Counter(b.msgid for b in batches if b.msgid)
    per_batch = Counter(by_msgid[b.msgid] if b.msgid else 0 for b in batches)
    matching = sum(
        1
        for b in batches
        if b.msgid in tasks and tasks[b.msgid].creator == b.sender and len(tasks[b.msgid].recipients) == b.target_count
    )
    per_creator = Counter(len(v) for v in state.group_msgs_by_creator().values())
    coverage = state.group_send_coverage("group")
    return {
        "batches": len(batches),
        "batch_status": dict(Counter(b.status for b in batches)),
        "tasks_at_wecom": len(tasks),
        "tasks_per_batch": {str(k): v for k, v in sorted(per_batch.items())},
        "tasks_per_owner": {str(k): v for k, v in sorted(per_creator.items())},
        "batches_matching_their_task": matching,
        "groups_planned": targets,
        "groups_covered": len(coverage),
        "groups_covered_more_than_once": sum(1 for msgids in coverage.values() if len(msgids) > 1),
    }


async def command_summary(factory: SessionFactory) -> dict[str, Any]:
    async with factory() as session:
        rows = (
            await session.exec(select(OutboxCommand.status, OutboxCommand.attempts, OutboxCommand.last_errcode))
        ).all()
    return {
        "status": dict(Counter(r[0] for r in rows)),
        "attempts": {str(k): v for k, v in sorted(Counter(r[1] for r in rows).items())},
        "last_errcode": {str(k): v for k, v in Counter(r[2] for r in rows if r[2] is not None).items()},
    }


async def save_and_time_read_side(factory: SessionFactory, rate: int) -> float:
    """Save the campaign, then time the planner's read side alone (audience, quota counts, rendering, batching:
    :func:`build_plan`, which writes nothing) on the data the run will plan."""
    spec = CampaignSpec.model_validate(yaml.safe_load(textwrap.dedent(SPEC)))
    async with transaction(factory) as session:
        session.add(User(username="bench", role=UserRole.OPERATOR.value))  # who saves it
        await session.flush()
        await save_campaign(session, CORP, spec, by="bench", now=datetime.now(UTC))
    async with factory() as session:
        campaign = (await session.exec(select(Campaign).where(Campaign.corp_id == CORP))).one()
        started = time.perf_counter()
        await build_plan(
            session,
            campaign,
            spec_of(campaign),
            slot="read-side",
            now=datetime.now(UTC),
            policy=OPEN_POLICY,
            calls_per_minute=rate,
        )
        return time.perf_counter() - started


async def outbox_bodies(factory: SessionFactory) -> list[dict[str, Any]]:
    async with factory() as session:
        commands = (
            await session.exec(
                select(OutboxCommand)
                .where(OutboxCommand.kind == "add_msg_template")
                .order_by(col(OutboxCommand.not_before), col(OutboxCommand.id))
            )
        ).all()
    return [_msg_template_body(c.payload) for c in commands]


# ---- the baseline --------------------------------------------------------------------------------------------


async def run_baseline(bodies: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The same bodies through a fresh client at R, one after the other, against a fresh emulator."""
    state = build_emulator(args)
    emulator = await start_emulator(state)
    refused = 0
    try:
        async with aiohttp.ClientSession() as http:
            client, limiter = make_client(make_settings(args, emulator.base_url), http)
            if args.warm_token:
                await client.get_follow_user_list()
            started = time.time()
            for body in bodies:
                while True:
                    try:
                        await client.add_msg_template(body)
                        break
                    except RateLimitedError:  # 45009: the client has blocked the API; the next call waits
                        refused += 1
            done = time.time()
    finally:
        await emulator.close()
    line = timeline(state, limiter, started, args.rate)
    return {
        "loop_s": round(done - started, 3),
        "refused": refused,
        "timeline": line,
        **ratios(line["last_s"], len(bodies), args.rate),
        "tasks_per_owner": {str(k): v for k, v in Counter(map(len, state.group_msgs_by_creator().values())).items()},
    }


# ---- report --------------------------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    c, b = result["campaign"], result.get("baseline")
    print(
        f"campaign throughput — {result['groups']} groups, {result['owners']} owners, R = {result['rate']}/min "
        f"(emulator {result['wecom_rate']}/min), "
        f"{'warm' if result['warm_token'] else 'cold'} token, PostgreSQL {result['postgres']}"
    )
    print(
        f"planning (run_due: audience, quota, {c['run']['targets']} targets, {c['run']['batches']} batches written): "
        f"{c['plan_s']:.2f} s (build_plan's read side alone, just before: {result['build_plan_read_s']:.2f} s)"
    )
    header = (
        f"{'':<10} {'first call':>10} {'last call':>10} {'minimum':>8} {'ratio':>7} {'N/R min':>8} "
        f"{'45009':>6} {'min gap R':>9}"
    )
    print(header)
    for name, row in (("campaign", c), ("baseline", b)):
        if row is None:
            continue
        line = row["timeline"]
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(
            f"{name:<10} {line['first_s']:>9.2f}s {line['last_s']:>9.2f}s {row['minimum_s']:>7.0f}s {ratio:>7} "
            f"{row['n_over_r_min']:>8} {line['calls_45009']:>6} {line['min_gap_r_calls_s'] or 0:>8.3f}s"
        )
    for name, row in (("campaign", c), ("baseline", b)):
        if row is not None:
            print(f"{name} windows: {row['timeline']['windows']}")
    print(f"campaign: pauses > 100 ms in the first window (call index, ms): {c['timeline']['first_window_pauses']}")
    checks = c["checks"]
    print(
        f"tasks per batch {checks['tasks_per_batch']}, batches matching their task "
        f"{checks['batches_matching_their_task']}/{checks['batches']}; "
        f"groups covered {checks['groups_covered']}/{checks['groups_planned']} "
        f"(more than once: {checks['groups_covered_more_than_once']}); commands {c['commands']}"
    )
    if b is not None and c["elapsed_s"] is not None and b["elapsed_s"] is not None:
        print(f"the campaign machinery adds {c['elapsed_s'] - b['elapsed_s']:+.2f} s over the bare paced loop")
    print(f"warnings during the campaign: {result['warnings']}")
    for name, row in (("campaign", c), ("baseline", b)):
        if row is not None and row["timeline"]["calls_45009"]:
            line = row["timeline"]
            print(f"{name}: 45009 at {line['refused_at_s']} s; at the first window edge (s from start): {line['edge']}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_database(args.pg_dsn) as (_dsn, url):
        engine = make_engine(url)
        try:
            factory = make_session_factory(engine)
            async with factory() as session:
                version = (await session.exec(select(func.version()))).one().split()[1]
            seed_started = time.perf_counter()
            await seed_database(factory, args)
            state = build_emulator(args)
            seed_s = time.perf_counter() - seed_started
            read_s = await save_and_time_read_side(factory, args.rate)
            emulator = await start_emulator(state)
            try:
                with collected_warnings() as warnings:
                    campaign = await run_campaign(factory, state, emulator.base_url, url, args)
            finally:
                await emulator.close()
            bodies = await outbox_bodies(factory)
        finally:
            await engine.dispose()
    baseline = None if args.skip_baseline else await run_baseline(bodies, args)
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rate": args.rate,
        "wecom_rate": args.wecom_rate or args.rate,
        "warm_token": args.warm_token,
        "owners": args.owners,
        "groups": args.owners * args.groups_per_owner,
        "postgres": version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "seed_s": round(seed_s, 2),
        "build_plan_read_s": round(read_s, 3),
        "campaign": campaign,
        "baseline": baseline,
        "warnings": warnings.summary(),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(run(args))
    print_report(result)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    output = args.output or RESULTS_DIR / f"campaign_throughput-{stamp}.json"
    text = json.dumps(result, ensure_ascii=False, indent=2)
    output.write_text(text, encoding="utf-8")
    (RESULTS_DIR / "campaign_throughput-latest.json").write_text(text, encoding="utf-8")
    print(f"written {output}")


if __name__ == "__main__":
    main()
