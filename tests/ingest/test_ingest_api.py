"""POST /ingest/messages and /ingest/behaviours: bearer auth, size limits, all-or-nothing batches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlmodel import select

from bot.settings import Settings
from bot.web.ingest_api import IngestApi
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.models import IntentSignal, Message
from tests.domain_support import process_services
from tests.ingest.conftest import INGEST_TOKEN

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}


@pytest.fixture
async def base_url(ingest_settings: Settings, session_factory: SessionFactory) -> AsyncIterator[str]:
    app = web.Application()
    services = process_services(ingest_settings.sop_dir)
    IngestApi(ingest_settings, session_factory, services, now=utcnow).add_routes(app)
    async with TestServer(app) as server:
        yield str(server.make_url(""))


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.post(url, data=body, headers=headers or {}) as response:
        return response.status, await response.json()


def _lines(*records: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()


RECORD = {"msgid": "arc-1", "sent_at": "2026-11-20T10:00:00+08:00", "external_userid": "wmArc", "text": "置换补贴多少"}


async def test_messages_are_stored_once(
    base_url: str, http: aiohttp.ClientSession, session_factory: SessionFactory
) -> None:
    body = _lines(RECORD, {**RECORD, "msgid": "arc-2", "sender_type": "staff", "userid": "zhangwei", "text": "您好"})
    assert await _post(http, base_url + "/ingest/messages", body, AUTH) == (
        200,
        {"received": 2, "stored": 2, "duplicates": 0},
    )
    array = json.dumps([RECORD]).encode()
    assert (await _post(http, base_url + "/ingest/messages", array, AUTH))[1]["duplicates"] == 1
    async with session_factory() as session:
        rows = (await session.exec(select(Message).order_by(Message.msgid))).all()
    assert [(r.source, r.msgid, r.sender_type) for r in rows] == [
        ("archive", "arc-1", "customer"),
        ("archive", "arc-2", "staff"),
    ]


async def test_missing_or_wrong_token_is_401(base_url: str, http: aiohttp.ClientSession) -> None:
    status, body = await _post(http, base_url + "/ingest/messages", _lines(RECORD))
    assert (status, body["error"]) == (401, "unauthorized")
    assert "令牌" in body["message"]
    wrong = {"Authorization": "Bearer " + INGEST_TOKEN[:-1] + "x"}
    assert (await _post(http, base_url + "/ingest/behaviours", _lines(RECORD), wrong))[0] == 401


async def test_oversize_body_is_413_and_bad_records_400_store_nothing(
    base_url: str, http: aiohttp.ClientSession, session_factory: SessionFactory
) -> None:
    big = _lines(*({**RECORD, "msgid": f"m{n}", "text": "长" * 100} for n in range(30)))
    status, body = await _post(http, base_url + "/ingest/messages", big, AUTH)
    assert (status, body["error"]) == (413, "body_too_large")
    status, body = await _post(http, base_url + "/ingest/messages", _lines(RECORD, {"msgid": "x"}), AUTH)
    assert (status, body["error"], body["line"]) == (400, "invalid_record", 2)
    assert body["message"].startswith("第 2 行")
    async with session_factory() as session:
        assert (await session.exec(select(Message))).all() == []


async def test_behaviours_become_signals(
    base_url: str, http: aiohttp.ClientSession, session_factory: SessionFactory
) -> None:
    booking = {"kind": "test_drive_booking", "external_userid": "wmArc", "ref": "bk-77", "at": 1763870400}
    for _ in range(2):
        assert await _post(http, base_url + "/ingest/behaviours", _lines(booking), AUTH) == (
            200,
            {"received": 1, "accepted": 1},
        )
    async with session_factory() as session:
        signals = (await session.exec(select(IntentSignal))).all()
    assert [(s.external_userid, s.ref) for s in signals] == [("wmArc", "test_drive_booking:bk-77")]
    status, body = await _post(http, base_url + "/ingest/behaviours", _lines({**booking, "kind": "lottery"}), AUTH)
    assert (status, body["error"]) == (400, "invalid_record")
