"""SOP due-step selection over 1,000,000 enrolments in PostgreSQL (issue 3's benchmark).

    .venv/bin/python bench/sop_due_selection.py [--rows 1000000] [--repeats 30] [--ticks 5]

What runs (see bench/README.md, "SOP due selection"):

* A scratch PostgreSQL database, migrated with :func:`bot.runtime.migrate.upgrade`, dropped at the end.
* ``--rows`` enrolments loaded server-side (``INSERT … SELECT generate_series``): ~98 % active and due over the
  next 90 days, ~1 % due now (the shipped ``new_customer_nurture`` template at its day-1 step, with their
  contacts, follow relations, staff and dealers), ~1 % completed; then ``VACUUM (ANALYZE)``.
* The tick's claim statement is taken from :func:`scrm.sop.ticks.run_due` itself: a session event sees the
  ``SELECT … FOR UPDATE SKIP LOCKED`` run_due builds and aborts that call before it runs. The statement is then
  run ``--repeats`` times through the same path (async ORM session, asyncpg prepared statements), each in a
  transaction rolled back, in three variants interleaved one per round:
  ``partial index`` (as migrated), ``no due index`` (``DROP INDEX ix_sop_enrolments_due`` inside that
  transaction: the baseline) and ``generic plan`` (``plan_cache_mode = force_generic_plan``: the plan
  PostgreSQL could switch a prepared statement to; ``status`` is a bind parameter there).
* EXPLAIN (ANALYZE, BUFFERS) of each variant, printed once.
* ``--ticks`` real ``run_due`` ticks (batch 200, one batch each) with the shipped templates: the day-1 1v1
  messages are rendered and written to the outbox.
* Process RSS and peak RSS (``/proc/self/status``: VmRSS, VmHWM) at each stage.

The figures are printed and written to ``bench/results/sop_due_selection-<time>.json`` (and ``-latest``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event, func, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState
from sqlmodel import Session, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.runtime import migrate
from scrm.db import SessionFactory, make_engine
from scrm.models import OutboxCommand, SopEnrolment, SopStepRun
from scrm.sop.catalog import Catalog, CatalogHolder
from scrm.sop.services import SopServices
from scrm.sop.ticks import run_due

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SOP_DIR = ROOT / "sop_templates"
CORP = "wwbenchcorp"
NOW = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)  # Tuesday 10:00 Asia/Shanghai: outside quiet hours
DUE_TEMPLATE = "new_customer_nurture"
DUE_STEP = 1  # its day-1 1v1 message: due at 10:00 the day after an enrolment at 09:00
DUE_INDEX = "ix_sop_enrolments_due"
STAFF = 200
DEALERS = 10
CHUNK = 200_000
BATCH = 200
VARIANTS: dict[str, list[str]] = {
    "partial index": [],
    "no due index": [f"DROP INDEX {DUE_INDEX}"],
    "generic plan": ["SET LOCAL plan_cache_mode = force_generic_plan"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.sop_due_selection", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="enrolments to load")
    p.add_argument("--repeats", type=int, default=30, help="measured runs of each variant")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured runs of each variant first (at least 1)")
    p.add_argument("--ticks", type=int, default=5, help="run_due ticks of one batch each (0 = skip)")
    p.add_argument(
        "--pg-dsn", default=os.environ.get("LIANYI_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    p.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results/<name>-<time>.json)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- measuring helpers


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "runs": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "max_ms": round(max(values, default=0.0), 2),
        "mean_ms": round(statistics.fmean(values), 2) if values else 0.0,
    }


def memory_mib() -> dict[str, float]:
    """This process's resident set now (VmRSS) and its peak so far (VmHWM, what ru_maxrss reports)."""
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in found:
            found[key] = int(line.split()[1])
    return {"rss_mib": round(found["VmRSS"] / 1024, 1), "peak_mib": round(found["VmHWM"] / 1024, 1)}


class ClaimCaptured(Exception):
    """Raised inside run_due once its claim statement is seen (nothing has been claimed yet)."""


@dataclass
class ClaimObserver:
    """Listens for the tick's claim (a SELECT of enrolments FOR UPDATE) and counts the SQL statements sent."""

    capture: bool = False
    statement: Any = None
    seconds: list[float] = field(default_factory=list)
    statements: int = 0  # every SQL statement sent on the engine (before_cursor_execute)

    def on_cursor(self, *_args: Any) -> None:
        self.statements += 1

    def on_execute(self, state: ORMExecuteState) -> Any:
        mapper = state.bind_mapper
        is_claim = (
            state.is_select
            and getattr(state.statement, "_for_update_arg", None) is not None
            and mapper is not None
            and mapper.class_ is SopEnrolment
        )
        if not is_claim:
            return None
        if self.capture:
            self.statement = state.statement
            raise ClaimCaptured
        started = time.perf_counter()
        result = state.invoke_statement()
        self.seconds.append(time.perf_counter() - started)
        return result


def observed_factory(engine: AsyncEngine, observer: ClaimObserver) -> SessionFactory:
    """scrm.db.make_session_factory, with ``observer`` listening on this factory's sessions only."""

    class ObservedSession(Session):
        pass

    event.listen(ObservedSession, "do_orm_execute", observer.on_execute)
    event.listen(engine.sync_engine, "before_cursor_execute", observer.on_cursor)
    return async_sessionmaker(engine, class_=AsyncSession, sync_session_class=ObservedSession, expire_on_commit=False)


# ---------------------------------------------------------------- scratch database and data


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """A migrated scratch database; yields (asyncpg DSN, SQLAlchemy URL) and drops it afterwards."""
    name = f"lianyi_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield dsn, url
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


SUBJECT = "'wm' || md5(g::text)"  # an external_userid-like id per generated row
ROSTER_SQL = [
    "INSERT INTO corps (corp_id, name, created_at) VALUES ($1, '基准测试企业', $2::timestamptz)",
    f"""INSERT INTO dealers (corp_id, code, name, city, region, address, phone, hours, created_at)
    SELECT $1, 'D' || lpad(d::text, 3, '0'), '示例4S店' || d, '北京', '华北', '朝阳区示例路' || d || '号',
           '010-6000000' || d, '09:00-18:00', $2::timestamptz
    FROM generate_series(0, {DEALERS - 1}) AS d""",
    f"""INSERT INTO staff (corp_id, userid, name, dealer_id, role, has_contact_permission, active, created_at,
                       updated_at)
    SELECT $1::varchar, 'advisor' || s, '顾问' || s,
           (SELECT id FROM dealers WHERE corp_id = $1::varchar AND code = 'D' || lpad((s % {DEALERS})::text, 3, '0')),
           'advisor', true, true, $2::timestamptz, $2::timestamptz
    FROM generate_series(0, {STAFF - 1}) AS s""",
]
# the due rows (g % 100 = 1) are real contacts with a live relation to their staff member
CONTACTS_SQL = f"""
INSERT INTO contacts (corp_id, external_userid, name, avatar, type, gender, unionid, corp_name, stage, score,
                      created_at, updated_at)
SELECT $1, {SUBJECT}, '客户' || g, '', 1, 0, '', '', 'prospect', 0, $2::timestamptz, $2::timestamptz
FROM generate_series($3::int, $4::int) AS g WHERE g % 100 = 1
"""
RELATIONS_SQL = f"""
INSERT INTO follow_relations (corp_id, external_userid, userid, remark, description, state, channel, dealer_code,
                              advisor_userid, referrer, campaign, add_way, half_added, added_at, updated_at)
SELECT $1, {SUBJECT}, 'advisor' || (g % {STAFF}), '', '', '',
       (ARRAY['ad', 'referral', 'store', ''])[1 + g % 4], 'D' || lpad((g % {STAFF} % {DEALERS})::text, 3, '0'),
       '', '', '', 1, false, $2::timestamptz - interval '25 hours', $2::timestamptz
FROM generate_series($3::int, $4::int) AS g WHERE g % 100 = 1
"""
# g % 100: 0 → completed; 1 → due within the last hour; else → due in 1 min … 90 days (spread by a hash of g)
ENROLMENTS_SQL = f"""
INSERT INTO sop_enrolments (corp_id, template_id, version, subject_type, subject_id, occurrence, staff_userid,
                            priority, status, next_step, next_due_at, step_due_since, context, enrolled_at,
                            ended_at, end_reason, updated_at)
SELECT $1, t.template_id, t.version, 'contact', {SUBJECT}, '', 'advisor' || (g % {STAFF}), t.priority,
       CASE WHEN g % 100 = 0 THEN 'completed' ELSE 'active' END,
       CASE g % 100 WHEN 0 THEN 6 WHEN 1 THEN {DUE_STEP} ELSE g % 5 END,
       CASE g % 100 WHEN 0 THEN NULL
            WHEN 1 THEN $2::timestamptz - make_interval(secs => (g::bigint * 7919) % 3600)
            ELSE $2::timestamptz + make_interval(secs => 60 + (g::bigint * 2654435761) % 7776000) END,
       NULL, '{{"event": "contact.added"}}'::json,
       CASE WHEN g % 100 = 1
            THEN $2::timestamptz - interval '25 hours' - make_interval(secs => (g::bigint * 7919) % 3600)
            ELSE $2::timestamptz - make_interval(secs => (g::bigint * 40503) % 2592000) END,
       CASE WHEN g % 100 = 0 THEN $2::timestamptz - interval '1 day' END,
       CASE WHEN g % 100 = 0 THEN 'all_steps' END,
       $2::timestamptz
FROM generate_series($3::int, $4::int) AS g
CROSS JOIN LATERAL (
    SELECT CASE WHEN g % 100 = 1 THEN $5 ELSE ($6::text[])[1 + g % cardinality($6::text[])] END AS template_id
) AS pick
JOIN unnest($6::text[], $7::text[], $8::int[]) AS t(template_id, version, priority) USING (template_id)
"""


def contact_bundles(catalog: Catalog) -> list[Any]:
    return sorted((b for b in catalog.bundles.values() if b.template.kind == "contact"), key=lambda b: b.id)


async def load(dsn: str, catalog: Catalog, rows: int) -> dict[str, float]:
    """Roster, template versions, contacts for the due rows, ``rows`` enrolments; then VACUUM (ANALYZE)."""
    bundles = contact_bundles(catalog)
    conn = await asyncpg.connect(dsn)
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        async with conn.transaction():
            for sql in ROSTER_SQL:
                await conn.execute(sql, CORP, NOW)
            await conn.executemany(
                "INSERT INTO sop_versions (template_id, version, name, kind, spec, created_at) "
                "VALUES ($1, $2, $3, $4, $5::json, $6)",
                [
                    (b.id, b.version, b.template.name, b.template.kind, json.dumps(b.snapshot()), NOW)
                    for b in catalog.bundles.values()
                ],
            )
        ids = [b.id for b in bundles]
        versions = [b.version for b in bundles]
        priorities = [b.template.priority for b in bundles]
        for low in range(1, rows + 1, CHUNK):
            high = min(rows, low + CHUNK - 1)
            async with conn.transaction():
                await conn.execute(CONTACTS_SQL, CORP, NOW, low, high)
                await conn.execute(RELATIONS_SQL, CORP, NOW, low, high)
                await conn.execute(ENROLMENTS_SQL, CORP, NOW, low, high, DUE_TEMPLATE, ids, versions, priorities)
            print(f"  loaded {high:,} / {rows:,} enrolments ({time.perf_counter() - started:.0f} s)", flush=True)
        timings["load_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        for table in ("sop_enrolments", "contacts", "follow_relations", "staff", "dealers", "sop_versions"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        timings["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
    finally:
        await conn.close()
    return timings


async def table_facts(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS enrolments,"
            " count(*) FILTER (WHERE status = 'active') AS active,"
            " count(*) FILTER (WHERE status = 'active' AND next_due_at <= $1) AS due,"
            " count(*) FILTER (WHERE status <> 'active') AS finished,"
            " pg_relation_size('sop_enrolments') AS heap_bytes,"
            " pg_total_relation_size('sop_enrolments') AS total_bytes,"
            f" pg_relation_size('{DUE_INDEX}') AS due_index_bytes,"
            " current_setting('server_version') AS server_version"
            " FROM sop_enrolments",
            NOW,
        )
        return dict(row)
    finally:
        await conn.close()


# ---------------------------------------------------------------- the measured paths


async def capture_claim(factory: SessionFactory, services: SopServices, observer: ClaimObserver) -> Any:
    """The statement run_due issues to claim due enrolments at NOW (run_due is stopped before it runs)."""
    observer.capture = True
    try:
        with contextlib.suppress(ClaimCaptured):
            await run_due(factory, services, NOW, batch=BATCH)
    finally:
        observer.capture = False
    if observer.statement is None:
        raise RuntimeError("run_due issued no claim statement")
    return observer.statement


async def timed_claim(factory: SessionFactory, statement: Any, setup: list[str]) -> tuple[float, int]:
    """One claim as the tick runs it (rows become SopEnrolment objects), rolled back; (ms, rows)."""
    async with factory() as session:
        conn = await session.connection()
        for sql in setup:
            await conn.execute(text(sql))
        started = time.perf_counter()
        rows = (await session.exec(statement)).all()
        elapsed = (time.perf_counter() - started) * 1000
        await session.rollback()
    return elapsed, len(rows)


def sql_literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(int(value))


async def explain(factory: SessionFactory, statement: Any, setup: list[str]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim as a prepared statement (first EXECUTE: a custom plan, unless
    ``setup`` forces the generic one), in a transaction rolled back."""
    async with factory() as session:
        conn = await session.connection()
        compiled = statement.compile(dialect=conn.dialect)
        args = ", ".join(sql_literal(compiled.params[name]) for name in compiled.positiontup)
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for sql in setup:
            await conn.execute(text(sql))
        await raw.execute(f"PREPARE bench_claim AS {compiled.string}")
        try:
            plan = await raw.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim({args})")
        finally:
            await raw.execute("DEALLOCATE bench_claim")
        await session.rollback()
    return "\n".join(str(r[0]) for r in plan)


async def measure_variants(
    factory: SessionFactory, statement: Any, repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    """Every variant ``warmup`` times unmeasured, then ``repeats`` rounds of one run of each, interleaved."""
    warm: dict[str, list[float]] = {name: [] for name in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    claimed: dict[str, int] = {}
    for runs, into in ((warmup, warm), (repeats, times)):
        for _ in range(runs):
            for name, setup in VARIANTS.items():
                ms, rows = await timed_claim(factory, statement, setup)
                into[name].append(ms)
                claimed[name] = rows
    return warm, times, claimed


async def run_ticks(
    factory: SessionFactory, services: SopServices, observer: ClaimObserver, ticks: int
) -> list[dict[str, float]]:
    """``ticks`` real ticks at NOW, one batch of BATCH each: every claimed enrolment runs its day-1 step.

    Per enrolment: wall time and this process's CPU time outside the claim, and SQL statements sent."""
    report: list[dict[str, float]] = []
    for _ in range(ticks):
        observer.seconds.clear()
        observer.statements = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        advanced = await run_due(factory, services, NOW, batch=BATCH, max_batches=1)
        total_ms = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu_started) * 1000
        claim_ms = sum(observer.seconds) * 1000
        per = max(advanced, 1)
        report.append(
            {
                "enrolments": advanced,
                "total_ms": round(total_ms, 1),
                "claim_ms": round(claim_ms, 2),
                "per_enrolment_ms": round((total_ms - claim_ms) / per, 2),
                "cpu_per_enrolment_ms": round(cpu_ms / per, 2),
                "statements_per_enrolment": round((observer.statements - 1) / per, 1),
            }
        )
    return report


async def tick_outcome(factory: SessionFactory) -> dict[str, int]:
    async with factory() as session:
        runs = (await session.exec(select(SopStepRun.outcome, func.count()).group_by(col(SopStepRun.outcome)))).all()
        commands = (
            await session.exec(select(OutboxCommand.kind, func.count()).group_by(col(OutboxCommand.kind)))
        ).all()
    found = {f"step_runs:{outcome}": int(n) for outcome, n in runs}
    found.update({f"commands:{kind}": int(n) for kind, n in commands})
    return found


# ---------------------------------------------------------------- output


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(result: dict[str, Any]) -> None:
    facts = result["table"]
    print()
    print(
        f"sop_enrolments: {facts['enrolments']:,} rows ({facts['active']:,} active, {facts['due']:,} due at NOW, "
        f"{facts['finished']:,} finished); heap {facts['heap_bytes'] / 2**20:.0f} MiB, with indexes "
        f"{facts['total_bytes'] / 2**20:.0f} MiB, {DUE_INDEX} {facts['due_index_bytes'] / 2**20:.1f} MiB; "
        f"PostgreSQL {facts['server_version']}"
    )
    print()
    rows = []
    for name, s in result["claim"].items():
        rows.append([name, s["rows"], s["runs"], s["p50_ms"], s["p95_ms"], s["max_ms"], s["first_ms"]])
    print(table(["claim (run_due's statement)", "rows", "runs", "p50 ms", "p95 ms", "max ms", "first ms"], rows))
    if result["ticks"]:
        print()
        tick_rows = [[i + 1, *tick.values()] for i, tick in enumerate(result["ticks"])]
        headers = ["tick", "enrolments", "total ms", "claim ms", "ms / enrolment", "CPU ms / enr.", "SQL / enr."]
        print(table(headers, tick_rows))
        print("outcome:", ", ".join(f"{k} {v}" for k, v in sorted(result["tick_outcome"].items())))
    print()
    print(
        table(
            ["process memory", "RSS MiB", "peak MiB"],
            [[k, v["rss_mib"], v["peak_mib"]] for k, v in result["memory"].items()],
        )
    )
    for name, plan in result["explain"].items():
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) — {name}:\n{plan}")


def write_json(result: dict[str, Any], output: Path | None) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = output or RESULTS_DIR / f"sop_due_selection-{stamp}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    (RESULTS_DIR / "sop_due_selection-latest.json").write_text(out.read_text(encoding="utf-8"), encoding="utf-8")
    return out


# ---------------------------------------------------------------- main


async def stage(label: str, memory: dict[str, dict[str, float]], work: Awaitable[Any]) -> Any:
    print(f"{label}…", flush=True)
    value = await work
    memory[f"after {label}"] = memory_mib()
    return value


async def run(args: argparse.Namespace) -> dict[str, Any]:
    memory = {"start (imports done)": memory_mib()}
    holder = CatalogHolder(SOP_DIR)
    catalog = holder.current()
    if not catalog.ok:
        raise SystemExit(f"{SOP_DIR} does not load: {holder.problems}")
    services = SopServices(holder=CatalogHolder.fixed(catalog))
    result: dict[str, Any] = {
        "bench": "sop_due_selection",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {k: v for k, v in vars(args).items() if k != "output"} | {"now": NOW.isoformat(), "batch": BATCH},
    }
    async with scratch_database(args.pg_dsn) as (dsn, url):
        result["load"] = await stage(f"loading {args.rows:,} enrolments", memory, load(dsn, catalog, args.rows))
        result["table"] = await table_facts(dsn)
        engine = make_engine(url)
        observer = ClaimObserver()
        factory = observed_factory(engine, observer)
        try:
            statement = await capture_claim(factory, services, observer)
            result["statement"] = str(statement.compile(dialect=engine.dialect))
            warm, times, claimed = await stage(
                "measuring the claim", memory, measure_variants(factory, statement, args.repeats, args.warmup)
            )
            result["claim"] = {
                name: {"rows": claimed.get(name, 0), **summary_ms(times[name]), "first_ms": round(warm[name][0], 2)}
                for name in VARIANTS
            }
            result["claim_runs_ms"] = {name: [round(v, 3) for v in values] for name, values in times.items()}
            result["explain"] = {name: await explain(factory, statement, setup) for name, setup in VARIANTS.items()}
            result["ticks"] = await stage(
                f"{args.ticks} run_due ticks", memory, run_ticks(factory, services, observer, args.ticks)
            )
            result["tick_outcome"] = await tick_outcome(factory) if args.ticks else {}
        finally:
            await engine.dispose()
    result["memory"] = memory
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.warmup = max(1, args.warmup)
    result = asyncio.run(run(args))
    print_report(result)
    print(f"\nwritten to {write_json(result, args.output)}")


if __name__ == "__main__":
    main()
