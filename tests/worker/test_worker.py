"""The worker and router against a real inbox (SQL on SQLite/PostgreSQL, Redis Streams)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict

import pytest
from sqlmodel import select

from bot.edge.events import ContactAdded, GroupCreated, WeComEvent
from bot.inbox.base import Inbox
from bot.runtime.router import HandlerContext, Router
from bot.runtime.worker import Worker
from scrm.db import SessionFactory
from scrm.models import DeadLetter
from tests.worker.callbacks import contact_added, group_created, inbox_item, tag_created
from tests.worker.conftest import InboxFactory


def make_worker(inbox: Inbox, router: Router, ctx: HandlerContext, **options: object) -> Worker:
    settings: dict[str, object] = {"consumer": "test-worker", "max_attempts": 3, "backoff_base": 0.0}
    settings.update(options)
    return Worker(inbox, router, ctx, **settings)  # type: ignore[arg-type]


async def test_router_runs_every_handler_of_a_type_in_registration_order(inbox: Inbox, ctx: HandlerContext) -> None:
    router = Router()
    calls: list[tuple[str, str]] = []

    @router.on("contact.added")
    async def first(event: WeComEvent, ctx: HandlerContext) -> None:
        assert isinstance(event, ContactAdded)
        calls.append(("first", f"{event.external_userid}/{event.state}"))

    async def second(event: WeComEvent, ctx: HandlerContext) -> None:
        calls.append(("second", event.dedup_key))

    router.register("contact.added", second)

    @router.on("group.created")
    async def group(event: WeComEvent, ctx: HandlerContext) -> None:
        assert isinstance(event, GroupCreated)
        calls.append(("group", event.chat_id))

    added = inbox_item(contact_added("wmAAA", 1))
    await inbox.put(added)
    await inbox.put(inbox_item(group_created("wrCHAT")))

    assert await make_worker(inbox, router, ctx).run_once() == 2
    assert sorted(calls) == [("first", "wmAAA/seq1"), ("group", "wrCHAT"), ("second", added.dedup_key)]
    assert calls.index(("first", "wmAAA/seq1")) < calls.index(("second", added.dedup_key))
    assert router.event_types == ["contact.added", "group.created"]
    assert await inbox.claim("check", block_ms=0) == []  # all acked


def test_router_refuses_an_event_type_that_does_not_exist() -> None:
    router = Router()

    async def handler(event: WeComEvent, ctx: HandlerContext) -> None:
        return None

    with pytest.raises(ValueError, match=r"contact\.add"):
        router.register("contact.add", handler)


async def test_event_type_without_handler_is_acked_and_logged_once(
    inbox: Inbox, ctx: HandlerContext, caplog: pytest.LogCaptureFixture
) -> None:
    await inbox.put(inbox_item(tag_created("et1")))
    await inbox.put(inbox_item(tag_created("et2")))
    with caplog.at_level(logging.WARNING, logger="bot.runtime.router"):
        assert await make_worker(inbox, Router(), ctx).run_once() == 2
    unhandled = [r for r in caplog.records if "no handler for event type tag.created" in r.getMessage()]
    assert len(unhandled) == 1
    assert await inbox.claim("check", block_ms=0) == []


async def test_failed_handler_is_retried_with_backoff_then_succeeds(
    inbox: Inbox, ctx: HandlerContext, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router()
    attempts: list[str] = []
    stop = asyncio.Event()

    @router.on("contact.added")
    async def flaky(event: WeComEvent, ctx: HandlerContext) -> None:
        attempts.append(event.dedup_key)
        if len(attempts) < 3:
            raise RuntimeError(f"database hiccup #{len(attempts)}")
        stop.set()

    item = inbox_item(contact_added("wmBBB", 1))
    await inbox.put(item)
    worker = make_worker(inbox, router, ctx, max_attempts=5, backoff_base=0.05, claim_block_ms=50)
    with caplog.at_level(logging.WARNING, logger="bot.runtime.worker"):
        async with asyncio.timeout(30):
            await worker.run(stop)

    assert attempts == [item.dedup_key] * 3
    failures = [r.getMessage() for r in caplog.records if r.name == "bot.runtime.worker"]
    assert len(failures) == 2
    assert f"{item.dedup_key} (attempt 1/5)" in failures[0] and "database hiccup #1" in failures[0]
    assert f"{item.dedup_key} (attempt 2/5)" in failures[1]
    assert await inbox.claim("check", block_ms=0) == []


def test_backoff_grows_exponentially_with_jitter_and_a_cap(inbox: Inbox, ctx: HandlerContext) -> None:
    worker = Worker(inbox, Router(), ctx, consumer="w", max_attempts=10, backoff_base=1.0, backoff_max=20.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 20.0), (60, 20.0)]:
        delays = [worker.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


async def test_per_key_order_holds_under_concurrency_and_failures(
    make_inbox: InboxFactory, ctx: HandlerContext
) -> None:
    keys, per_key = 24, 8
    total = keys * per_key
    router = Router()
    handled: dict[str, list[int]] = defaultdict(list)
    failed_once: set[str] = set()
    running: set[str] = set()
    peak = 0
    stop = asyncio.Event()
    rng = random.Random(7)

    @router.on("contact.added")
    async def record(event: WeComEvent, ctx: HandlerContext) -> None:
        nonlocal peak
        assert isinstance(event, ContactAdded)
        assert event.external_userid not in running, "two events of one contact ran at once"
        running.add(event.external_userid)
        peak = max(peak, len(running))
        try:
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)  # interleave with the other handlers
            seq = int(event.state.removeprefix("seq"))
            if seq % 3 == 1 and event.dedup_key not in failed_once:
                failed_once.add(event.dedup_key)
                raise RuntimeError("first attempt fails")
            handled[event.external_userid].append(seq)
            if sum(len(v) for v in handled.values()) == total:
                stop.set()
        finally:
            running.discard(event.external_userid)

    seed = make_inbox()
    for seq in range(per_key):
        for k in range(keys):
            await seed.put(inbox_item(contact_added(f"wm{k:03d}", seq)))
    workers = [
        make_worker(make_inbox(), router, ctx, consumer=f"worker-{n}", concurrency=8, claim_block_ms=50)
        for n in range(2)
    ]
    async with asyncio.timeout(60):
        await asyncio.gather(*(w.run(stop) for w in workers))

    assert handled == {f"wm{k:03d}": list(range(per_key)) for k in range(keys)}
    assert peak > 1  # different contacts really ran concurrently


async def test_exhausted_retries_write_a_dead_letter(
    inbox: Inbox, ctx: HandlerContext, session_factory: SessionFactory
) -> None:
    router = Router()
    calls = 0

    @router.on("contact.added")
    async def broken(event: WeComEvent, ctx: HandlerContext) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("follow_user")

    item = inbox_item(contact_added("wmCCC", 1))
    later = inbox_item(contact_added("wmCCC", 2))
    await inbox.put(item)
    await inbox.put(later)
    # backoff 0: every retry is due at once, so one run_once goes through all attempts.
    assert await make_worker(inbox, router, ctx, max_attempts=3).run_once() == 6

    assert calls == 6  # 3 attempts each; the dead first one did not block the second for ever
    async with session_factory() as session:
        letters = (await session.exec(select(DeadLetter).order_by(DeadLetter.id))).all()  # type: ignore[arg-type]
    assert [(d.source, d.ref, d.attempts) for d in letters] == [
        ("inbox", item.dedup_key, 3),
        ("inbox", later.dedup_key, 3),
    ]
    assert letters[0].payload == item.payload
    assert letters[0].event_type == "contact.added" and letters[0].ordering_key == "contact:wmCCC"
    assert letters[0].error == "KeyError: 'follow_user'"
    assert letters[0].corp_id == item.corp_id
    assert await inbox.claim("check", block_ms=0) == []
