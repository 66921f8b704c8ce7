"""Bulk ingest commits in bounded write transactions, ends where one transaction would, and a re-send after a
failure part-way completes it exactly (scrm.intent.ingest.store_messages / record_behaviours; the endpoint)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from bot.web.ingest_api import IngestApi
from scrm.db import SessionFactory, make_engine, make_session_factory, write_transaction
from scrm.intent.ingest import BatchLimits, IncomingBehaviour, IncomingMessage, record_behaviours, store_messages
from scrm.leads.rules import HandoffRules
from scrm.leads.services import LeadServices
from scrm.models import Contact, FollowRelation, IntentSignal, Lead, LeadScoreChange, Message, OutboxCommand
from scrm.rows import ensure_corp
from scrm.services import Services
from tests.conftest import create_pg_database, create_sqlite_database, drop_pg_database, make_settings, pg_async_url
from tests.domain_support import process_services, running_sop
from tests.ingest.conftest import INGEST_TOKEN, SOP_DIR

CORP = "wwbatchcorp"
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
CUSTOMERS = ("wmBatchA", "wmBatchB", "wmBatchC")
TEXTS = ("落地价多少", "周末能试驾吗", "贷款首付多少", "旧车置换有补贴吗", "好的", "这个月想定下来", "什么时候能提车")
ONE_TRANSACTION = BatchLimits(records=5000, seconds=3600)


def services() -> Services:
    """Scoring, tags, the SOP keyword trigger and lead handoff: everything a stored message can set off."""
    leads = LeadServices.with_rules(HandoffRules(), "https://scrm.example.com/")
    return process_services(SOP_DIR, sop=running_sop(SOP_DIR), leads=leads)


def messages(count: int) -> list[IncomingMessage]:
    """``count`` messages from three customers in turn (each customer's messages span every batch)."""
    return [
        IncomingMessage(
            source="archive",
            msgid=f"batch-{n:04d}",
            sent_at=NOW - timedelta(minutes=count - n),
            external_userid=CUSTOMERS[n % len(CUSTOMERS)],
            text=TEXTS[n % len(TEXTS)],
        )
        for n in range(count)
    ]


async def seed_contacts(factory: SessionFactory) -> None:
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        for ext in CUSTOMERS:
            session.add(Contact(corp_id=CORP, external_userid=ext, name=f"客户{ext[-1]}"))
            session.add(FollowRelation(corp_id=CORP, external_userid=ext, userid="zhangwei", added_at=NOW))


async def ingest(factory: SessionFactory, items: list[IncomingMessage], limits: BatchLimits) -> int:
    hooks = services()
    return await store_messages(factory, CORP, items, limits=limits, intent=hooks.intent, hooks=hooks, now=lambda: NOW)


async def snapshot(factory: SessionFactory) -> dict[str, Any]:
    """What ingestion decides, without row ids and wall-clock stamps."""
    async with factory() as session:
        rows = (await session.exec(select(Message).order_by(col(Message.msgid)))).all()
        stored = [(m.msgid, m.external_userid, m.primary_intent, m.intent_score, m.classified_at) for m in rows]
        signals = sorted(
            (s.external_userid, s.ref, s.code, s.weight) for s in (await session.exec(select(IntentSignal))).all()
        )
        contacts = sorted(
            (c.external_userid, c.score, c.intent_level, c.stage, c.last_active_at)
            for c in (await session.exec(select(Contact))).all()
        )
        changes = [
            (c.external_userid, c.score_before, c.score_after, c.level_before, c.level_after, c.stage_after)
            for c in (await session.exec(select(LeadScoreChange).order_by(col(LeadScoreChange.id)))).all()
        ]
        leads = sorted((lead.external_userid, lead.status) for lead in (await session.exec(select(Lead))).all())
        commands = sorted((c.kind, c.idempotency_key) for c in (await session.exec(select(OutboxCommand))).all())
    return {
        "messages": stored,
        "signals": signals,
        "contacts": contacts,
        "score_changes": changes,
        "leads": leads,
        "commands": commands,
    }


class Commits:
    """Counts the transactions an engine commits."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "commit", self._commit)

    def _commit(self, _conn: Any) -> None:
        self.count += 1


@pytest.fixture
async def single_shot(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A second fresh database of the same kind: the reference ingest in one transaction."""
    if database_url.startswith("sqlite"):
        yield await create_sqlite_database(tmp_path / "single-shot.db")
        return
    name = await create_pg_database(request.getfixturevalue("pg_template"))
    try:
        yield pg_async_url(name)
    finally:
        await drop_pg_database(name)


async def reference_state(url: str, items: list[IncomingMessage]) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        await seed_contacts(factory)
        commits = Commits(engine)
        assert await ingest(factory, items, ONE_TRANSACTION) == len(items)
        assert commits.count == 1
        return await snapshot(factory)
    finally:
        await engine.dispose()


async def test_batches_commit_apart_and_end_as_one_transaction_would(
    engine: AsyncEngine, session_factory: SessionFactory, single_shot: str
) -> None:
    items = messages(200)
    await seed_contacts(session_factory)
    commits = Commits(engine)
    assert await ingest(session_factory, items, BatchLimits(records=20, seconds=3600)) == 200
    assert commits.count == 10
    batched = await snapshot(session_factory)
    assert len(batched["messages"]) == 200
    assert {c[0] for c in batched["score_changes"]} == set(CUSTOMERS)  # every customer was scored
    assert batched == await reference_state(single_shot, items)


async def test_a_batch_closes_when_its_time_is_up(engine: AsyncEngine, session_factory: SessionFactory) -> None:
    await seed_contacts(session_factory)
    commits = Commits(engine)
    assert await ingest(session_factory, messages(12), BatchLimits(records=100, seconds=0)) == 12
    assert commits.count == 12  # a budget of no time at all: every record is its own transaction


async def test_resend_after_failure_part_way_completes_exactly(
    engine: AsyncEngine, session_factory: SessionFactory, single_shot: str
) -> None:
    items = messages(100)
    await seed_contacts(session_factory)
    inserts = 0
    task = asyncio.create_task(ingest(session_factory, items, BatchLimits(records=20, seconds=3600)))

    def kill_in_third_batch(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal inserts
        if statement.startswith("INSERT INTO messages"):
            inserts += 1
            if inserts == 50:  # the 10th record of the third batch: the process dies here
                task.cancel()

    event.listen(engine.sync_engine, "before_cursor_execute", kill_in_third_batch)
    with pytest.raises(asyncio.CancelledError):
        await task
    event.remove(engine.sync_engine, "before_cursor_execute", kill_in_third_batch)
    async with session_factory() as session:
        kept = (await session.exec(select(Message.msgid).order_by(col(Message.msgid)))).all()
    assert list(kept) == [m.msgid for m in items[:40]]  # two whole batches; the third rolled back
    assert await ingest(session_factory, items, BatchLimits(records=20, seconds=3600)) == 60
    assert await ingest(session_factory, items, BatchLimits(records=20, seconds=3600)) == 0
    assert await snapshot(session_factory) == await reference_state(single_shot, items)


async def test_behaviours_in_batches_count_once(engine: AsyncEngine, session_factory: SessionFactory) -> None:
    await seed_contacts(session_factory)
    hooks = services()
    behaviours = [
        IncomingBehaviour(kind="form", external_userid=CUSTOMERS[n % 3], ref=f"form:f{n}", at=NOW) for n in range(9)
    ]
    commits = Commits(engine)
    for _ in range(2):
        await record_behaviours(
            session_factory,
            CORP,
            behaviours,
            limits=BatchLimits(records=4, seconds=3600),
            intent=hooks.intent,
            hooks=hooks,
        )
    assert commits.count == 6  # 4 + 4 + 1, twice
    async with session_factory() as session:
        refs = (await session.exec(select(IntentSignal.ref).where(IntentSignal.kind == "form"))).all()
    assert sorted(refs) == sorted(b.ref for b in behaviours)


async def test_endpoint_answers_counts_across_batches(database_url: str, session_factory: SessionFactory) -> None:
    settings = make_settings(
        database_url=database_url, corp_id=CORP, sop_dir=SOP_DIR, ingest_token=INGEST_TOKEN, ingest_batch_records=3
    )
    app = web.Application()
    IngestApi(settings, session_factory, services(), now=lambda: NOW).add_routes(app)
    records = [
        {"msgid": f"api-{n}", "sent_at": 1763870400 + n, "external_userid": "wmApi", "text": "多少钱"} for n in range(7)
    ]
    auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    answers = []
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        for body in (records[:4], records):
            data = "\n".join(json.dumps(r) for r in body).encode()
            async with http.post(server.make_url("/ingest/messages"), data=data, headers=auth) as response:
                answers.append((response.status, await response.json()))
    assert answers == [
        (200, {"received": 4, "stored": 4, "duplicates": 0}),
        (200, {"received": 7, "stored": 3, "duplicates": 4}),
    ]
