"""Sustained lead handoffs per minute on PostgreSQL (issue 5's benchmark).

    .venv/bin/python bench/handoff_throughput.py [--contacts 3000] [--dealers 10] [--advisors 5] [--workers 1 4]

What runs (see bench/README.md, "Lead handoff"):

* A scratch PostgreSQL database, migrated, dropped at the end; ``--dealers`` dealers open all day with
  ``--advisors`` advisors and one manager each, a brand account, and ``--contacts`` hot contacts: each follows
  the brand account through a contact way naming a dealer, has a score change with reasons and two messages.
* **Handoff**: :func:`scrm.leads.handoff.consider` (trigger ``level_H``), one contact per transaction, from
  ``--workers`` concurrent workers (each its own connection), as the worker runs it after a level change: lead
  row, routing (dealer by state, advisor by open leads and round robin), accept SLA, a
  transfer request with its outbox command (the customer is not the advisor's contact yet), history, and the
  advisor's notification.
* **Baseline** in the same run: the same number of transactions, each inserting one audit row (the floor any
  transaction on this database costs), with the same worker count.
* **Flush**: the notification flush tick turning every pending notification into app-message commands.
* Checks afterwards: one lead per contact, every advisor's load within one of the others at their dealer.

Figures are printed and written to ``bench/results/handoff_throughput-<time>.json`` (and ``-latest``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func
from sqlmodel import select

from bench.sop_due_selection import percentile, scratch_database, summary_ms
from scrm import audit
from scrm.db import SessionFactory, make_engine, make_session_factory, write_transaction
from scrm.leads import handoff
from scrm.leads.notify import flush_notifications
from scrm.leads.rules import HandoffRules, NotifyLimits, SlaRules
from scrm.leads.services import LeadServices
from scrm.models import Lead, OutboxCommand

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
CORP = "wwbenchhandoff"
SEED_SQL = [
    "INSERT INTO corps (corp_id, name, created_at) VALUES ($1, '线索基准企业', $2::timestamptz)",
    """INSERT INTO dealers (corp_id, code, name, city, region, address, phone, hours, opening_hours, created_at)
    SELECT $1, 'D' || lpad(d::text, 3, '0'), '示例4S店' || d, '城市' || d, '', '', '', '', '', $2::timestamptz
    FROM generate_series(0, $3::int - 1) AS d""",
    """INSERT INTO staff (corp_id, userid, name, dealer_id, role, has_contact_permission, active, duty_hours,
                       capacity, created_at, updated_at)
    SELECT $1::varchar, 'adv_' || d.code || '_' || s, '顾问' || s, d.id, 'advisor', true, true, '', 100000,
           $2::timestamptz, $2::timestamptz
    FROM dealers d CROSS JOIN generate_series(0, $4::int - 1) AS s WHERE d.corp_id = $1::varchar""",
    """INSERT INTO staff (corp_id, userid, name, dealer_id, role, has_contact_permission, active, duty_hours,
                       capacity, created_at, updated_at)
    SELECT $1::varchar, 'mgr_' || d.code, '经理', d.id, 'manager', true, true, '', 0, $2::timestamptz, $2::timestamptz
    FROM dealers d WHERE d.corp_id = $1::varchar""",
    """INSERT INTO staff (corp_id, userid, name, dealer_id, role, has_contact_permission, active, duty_hours,
                       capacity, created_at, updated_at)
    VALUES ($1::varchar, 'brand', '品牌官方号', NULL, 'operator', true, true, '', 0, $2::timestamptz,
            $2::timestamptz)""",
    """INSERT INTO contacts (corp_id, external_userid, name, avatar, type, gender, unionid, corp_name, stage,
                          intent_level, score, city, created_at, updated_at)
    SELECT $1, 'wm' || g, '客户' || g, '', 1, 0, '', '', 'intent', 'H', 88, '', $2::timestamptz, $2::timestamptz
    FROM generate_series(1, $5::int) AS g""",
    """INSERT INTO follow_relations (corp_id, external_userid, userid, remark, description, state, channel,
                                  dealer_code, advisor_userid, referrer, campaign, add_way, half_added, added_at,
                                  updated_at)
    SELECT $1, 'wm' || g, 'brand', '', '', '', 'ad', 'D' || lpad((g % $3::int)::text, 3, '0'), '', '', '', 1,
           false, $2::timestamptz - interval '2 days', $2::timestamptz
    FROM generate_series(1, $5::int) AS g""",
    """INSERT INTO lead_score_changes (corp_id, external_userid, score_before, score_after, level_before,
                                    level_after, stage_before, stage_after, reasons, at)
    SELECT $1, 'wm' || g, 60, 88, 'A', 'H', 'intent', 'intent',
           '[{"ref": "msg:kf:1", "rule": "kw:落地价", "code": "price", "points": 30},
             {"ref": "msg:kf:2", "rule": "kw:试驾", "code": "test_drive", "points": 25}]'::json,
           $2::timestamptz
    FROM generate_series(1, $5::int) AS g""",
    """INSERT INTO messages (corp_id, source, msgid, chat_type, chat_id, external_userid, userid, sender_type,
                          msgtype, text, sent_at, received_at)
    SELECT $1, 'kf', 'm' || g || '_' || k, 'single', '', 'wm' || g, '', 'customer', 'text',
           CASE k WHEN 1 THEN '落地价多少？' ELSE '这周末能试驾吗' END, $2::timestamptz - make_interval(mins => 3 - k),
           $2::timestamptz
    FROM generate_series(1, $5::int) AS g CROSS JOIN generate_series(1, 2) AS k""",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.handoff_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", type=int, default=3000, help="hot contacts handed off per worker count")
    p.add_argument("--dealers", type=int, default=10)
    p.add_argument("--advisors", type=int, default=5, help="advisors per dealer")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4], help="concurrent workers (one run each)")
    p.add_argument(
        "--pg-dsn", default=os.environ.get("LIANYI_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    p.add_argument("--output", type=Path, default=None)
    return p.parse_args(argv)


async def seed(dsn: str, args: argparse.Namespace, now: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        values: dict[str, Any] = {"1": CORP, "2": now, "3": args.dealers, "4": args.advisors, "5": args.contacts}
        for sql in SEED_SQL:
            used = sorted(set(re.findall(r"\$(\d+)", sql)))  # renumber the placeholders a statement uses
            numbered = re.sub(r"\$(\d+)", lambda m, used=used: f"${used.index(m.group(1)) + 1}", sql)
            await conn.execute(numbered, *(values[n] for n in used))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE leads, lead_events, staff_notifications, customer_transfers, outbox_commands, audit_log"
        )
    finally:
        await conn.close()


async def run_workers(count: int, contacts: list[str], work: Any) -> tuple[float, list[float]]:
    """Run ``work(ext)`` for every contact from ``count`` workers; wall seconds and per-item latencies (ms)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for ext in contacts:
        queue.put_nowait(ext)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            ext = queue.get_nowait()
            started = time.perf_counter()
            await work(ext)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(count)))
    return time.perf_counter() - started, latencies


async def measure(
    factory: SessionFactory, dsn: str, args: argparse.Namespace, workers: int, now: datetime, services: LeadServices
) -> dict[str, Any]:
    contacts = [f"wm{g}" for g in range(1, args.contacts + 1)]
    await reset(dsn)

    async def bare(ext: str) -> None:
        async with write_transaction(factory) as session:
            await audit.record(session, CORP, "bench.baseline", "contact", ext)

    async def hand_off(ext: str) -> None:
        async with write_transaction(factory) as session:
            lead = await handoff.consider(session, services, CORP, ext, trigger="level_H", now=now)
            assert lead is not None and lead.status == "assigned", (ext, lead)

    base_wall, base_lat = await run_workers(workers, contacts, bare)
    wall, lat = await run_workers(workers, contacts, hand_off)
    flush_started = time.perf_counter()
    messages = 0
    while sent := await flush_notifications(
        factory, CORP, NotifyLimits(per_minute=30, per_hour=1000), now=now, digest_url="https://scrm.example.com/leads"
    ):
        messages += sent
    flush_wall = time.perf_counter() - flush_started
    async with factory() as session:
        leads = list((await session.exec(select(Lead.external_userid, Lead.advisor_userid))).all())
        commands = Counter(
            dict((await session.exec(select(OutboxCommand.kind, func.count()).group_by(OutboxCommand.kind))).all())
        )
    assert len(leads) == len({ext for ext, _ in leads}) == len(contacts), "one lead per contact"
    per_advisor = Counter(advisor for _, advisor in leads)
    return {
        "workers": workers,
        "handoffs": len(contacts),
        "handoff_wall_s": round(wall, 2),
        "handoffs_per_minute": round(len(contacts) / wall * 60),
        "handoff_latency": summary_ms(lat),
        "baseline_wall_s": round(base_wall, 2),
        "baseline_tx_per_minute": round(len(contacts) / base_wall * 60),
        "baseline_latency": summary_ms(base_lat),
        "handoff_cost_vs_baseline": round(wall / base_wall, 1),
        "flush_messages": messages,
        "flush_wall_s": round(flush_wall, 2),
        "commands": dict(commands),
        "advisor_load_min_max": [min(per_advisor.values()), max(per_advisor.values())],
    }


def print_report(result: dict[str, Any]) -> None:
    print(
        f"lead handoff benchmark — {result['contacts']} contacts, {result['dealers']} dealers × "
        f"{result['advisors']} advisors, PostgreSQL {result['postgres']}"
    )
    header = f"{'workers':>7} {'handoffs/min':>13} {'p50 ms':>7} {'p95 ms':>7} {'baseline tx/min':>16} {'cost×':>6}"
    print(header)
    for run in result["runs"]:
        print(
            f"{run['workers']:>7} {run['handoffs_per_minute']:>13} {run['handoff_latency']['p50_ms']:>7} "
            f"{run['handoff_latency']['p95_ms']:>7} {run['baseline_tx_per_minute']:>16} "
            f"{run['handoff_cost_vs_baseline']:>6}"
        )
    for run in result["runs"]:
        print(
            f"workers {run['workers']}: flush {run['flush_messages']} messages in {run['flush_wall_s']} s; "
            f"commands {run['commands']}; leads per advisor {run['advisor_load_min_max']}"
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    rules = HandoffRules(sla=SlaRules(business_hours=False))
    services = LeadServices.with_rules(rules, "https://scrm.example.com/")
    async with scratch_database(args.pg_dsn) as (dsn, url):
        await seed(dsn, args, now)
        engine = make_engine(url, pool_size=max(args.workers) + 2)
        try:
            factory = make_session_factory(engine)
            async with factory() as session:
                version = (await session.exec(select(func.version()))).one().split()[1]
            runs = [await measure(factory, dsn, args, workers, now, services) for workers in args.workers]
        finally:
            await engine.dispose()
    return {
        "contacts": args.contacts,
        "dealers": args.dealers,
        "advisors": args.advisors,
        "postgres": version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": runs,
        "p95_of_p95_ms": percentile([r["handoff_latency"]["p95_ms"] for r in runs], 95),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print_report(result)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    output = args.output or RESULTS_DIR / f"handoff_throughput-{stamp}.json"
    text = json.dumps(result, ensure_ascii=False, indent=2)
    output.write_text(text, encoding="utf-8")
    (RESULTS_DIR / "handoff_throughput-latest.json").write_text(text, encoding="utf-8")
    print(f"written {output}")


if __name__ == "__main__":
    main()
