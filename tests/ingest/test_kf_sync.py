"""微信客服: kf_msg_or_event → kf/sync_msg paging into messages, with the cursor committed with each page."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import pytest
from sqlmodel import col, select

from bot.edge.events import parse_event
from bot.emulator.server import RunningEmulator
from bot.emulator.state import EmulatorState
from bot.runtime.handlers import register_sync_handlers
from bot.runtime.kf_sync import KfSync, stored_cursor
from bot.runtime.router import HandlerContext, Router
from bot.settings import Settings
from bot.wecom.client import build_wecom_client
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.models import Message
from tests.domain_support import process_services
from tests.ingest.conftest import OPEN_KFID, SOP_DIR

CHILD = r"""
import asyncio, sys
from bot.runtime.kf_sync import KfSync
from bot.wecom.client import build_wecom_client
from bot.settings import load_settings
from scrm.db import make_engine, make_session_factory
from scrm.db_types import utcnow
from scrm.services import Services
import aiohttp

async def main() -> None:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    async def committed(open_kfid: str, cursor: str) -> None:
        print("committed", flush=True)
        await asyncio.Event().wait()  # killed here, after the first page is committed
    async with aiohttp.ClientSession() as http:
        client = build_wecom_client(settings, http, None)
        sync = KfSync(client, make_session_factory(engine), settings.corp_id, services=Services.build(settings.sop_dir),
                      now=utcnow, limit=int(sys.argv[1]), on_page_committed=committed)
        await sync.run(sys.argv[2])

asyncio.run(main())
"""


async def _messages(factory: SessionFactory) -> list[Message]:
    async with factory() as session:
        return list((await session.exec(select(Message).order_by(col(Message.sent_at), col(Message.msgid)))).all())


def _customer_says(world: EmulatorState, count: int) -> None:
    for n in range(count):
        world.kf_customer_message(OPEN_KFID, f"wmKf{n % 3}", f"第{n}条：这车落地多少钱")
        world.clock.advance(1)  # type: ignore[attr-defined]


async def test_callback_runs_a_sync_that_stores_customer_and_servicer_messages(
    ingest_settings: Settings, session_factory: SessionFactory, world: EmulatorState, http: aiohttp.ClientSession
) -> None:
    world.kf_enter_session(OPEN_KFID, "wmKf0")
    world.kf_customer_message(OPEN_KFID, "wmKf0", "想预约周末试驾")
    fields = world.kf_servicer_message(OPEN_KFID, "wmKf0", "zhangwei", "好的，周六上午可以")
    router = Router()
    register_sync_handlers(router)
    client = build_wecom_client(ingest_settings, http, None)
    ctx = HandlerContext(
        session_factory, ingest_settings, utcnow, lambda: None, process_services(ingest_settings.sop_dir), client=client
    )
    event = parse_event({k: str(v) for k, v in fields.items()})
    assert await router.dispatch(event, ctx)
    await router.dispatch(event, ctx)  # a redelivered callback pages from the stored cursor: nothing new
    rows = await _messages(session_factory)
    assert [(r.source, r.sender_type, r.external_userid, r.userid, r.text) for r in rows] == [
        ("kf", "customer", "wmKf0", "", "想预约周末试驾"),
        ("kf", "staff", "wmKf0", "zhangwei", "好的，周六上午可以"),
    ]


async def test_cancelled_mid_loop_resumes_without_loss_or_duplicates(
    ingest_settings: Settings, session_factory: SessionFactory, world: EmulatorState, http: aiohttp.ClientSession
) -> None:
    _customer_says(world, 7)
    client = build_wecom_client(ingest_settings, http, None)
    reached = asyncio.Event()

    async def stop_after_first_page(open_kfid: str, cursor: str) -> None:
        reached.set()
        await asyncio.Event().wait()

    first = KfSync(
        client,
        session_factory,
        ingest_settings.corp_id,
        services=process_services(SOP_DIR),
        now=utcnow,
        limit=3,
        on_page_committed=stop_after_first_page,
    )
    task = asyncio.create_task(first.run(OPEN_KFID))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await _messages(session_factory)) == 3
    calls_before = world.counters.api_calls["kf/sync_msg"]
    report = await KfSync(
        client, session_factory, ingest_settings.corp_id, services=process_services(SOP_DIR), now=utcnow, limit=3
    ).run(OPEN_KFID)
    assert (report.pages, report.fetched, report.stored) == (2, 4, 4)  # from the committed cursor on
    assert world.counters.api_calls["kf/sync_msg"] - calls_before == 2
    texts = [m.text for m in await _messages(session_factory)]
    assert texts == [f"第{n}条：这车落地多少钱" for n in range(7)]


async def test_expired_callback_token_falls_back_to_paging_without_it(
    ingest_settings: Settings, session_factory: SessionFactory, world: EmulatorState, http: aiohttp.ClientSession
) -> None:
    fields = world.kf_customer_message(OPEN_KFID, "wmKf1", "月底前能提车吗")
    world.clock.advance(601)  # type: ignore[attr-defined]
    client = build_wecom_client(ingest_settings, http, None)
    sync = KfSync(client, session_factory, ingest_settings.corp_id, services=process_services(SOP_DIR), now=utcnow)
    report = await sync.run(OPEN_KFID, fields["Token"])
    assert report.stored == 1
    assert world.counters.api_calls["kf/sync_msg"] == 2  # refused with 95007, then without the token


async def test_kill_9_after_a_committed_page_resumes_without_loss_or_duplicates(
    ingest_settings: Settings,
    session_factory: SessionFactory,
    world: EmulatorState,
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
) -> None:
    _customer_says(world, 5)
    env = {
        **os.environ,
        "LIANYI_CORP_ID": ingest_settings.corp_id,
        "LIANYI_CALLBACK_TOKEN": ingest_settings.callback_token,
        "LIANYI_CALLBACK_AES_KEY": ingest_settings.callback_aes_key,
        "LIANYI_APP_SECRET": ingest_settings.app_secret,
        "LIANYI_SECRET_KEY": ingest_settings.secret_key,
        "LIANYI_DATABASE_URL": ingest_settings.database_url,
        "LIANYI_WECOM_API_BASE": emulator.base_url,
        "LIANYI_SOP_DIR": SOP_DIR,
        "LIANYI_REDIS_URL": "",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, "2", OPEN_KFID, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    assert (await child.stdout.readline()).strip() == b"committed"
    os.kill(child.pid, signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL
    assert len(await _messages(session_factory)) == 2
    cursor = await stored_cursor(session_factory, ingest_settings.corp_id, OPEN_KFID)
    assert cursor
    client = build_wecom_client(ingest_settings, http, None)
    report = await KfSync(
        client, session_factory, ingest_settings.corp_id, services=process_services(SOP_DIR), now=utcnow, limit=2
    ).run(OPEN_KFID)
    assert report.fetched == 3
    texts = [m.text for m in await _messages(session_factory)]
    assert texts == [f"第{n}条：这车落地多少钱" for n in range(5)]
