"""Bad JSON on POST /ingest/messages and /ingest/behaviours: nesting is measured before parsing, every bad body is a
400 (or 413) with a reason in both languages, never a 500, and nothing already stored changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlmodel import func, select

from bot.settings import Settings
from bot.web.ingest_api import MAX_JSON_DEPTH, IngestApi
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.models import IntentSignal, Message
from tests.domain_support import process_services
from tests.ingest.conftest import INGEST_TOKEN

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}
BODY_LIMIT = 64 * 1024
MESSAGE = {"msgid": "arc-1", "sent_at": "2026-11-20T10:00:00+08:00", "external_userid": "wmArc", "text": "有优惠吗"}
BOOKING = {"kind": "test_drive_booking", "external_userid": "wmArc", "ref": "bk-1", "at": 1763870400}
PATHS = {"/ingest/messages": (MESSAGE, "payload"), "/ingest/behaviours": (BOOKING, "detail")}


@pytest.fixture
async def base_url(ingest_settings: Settings, session_factory: SessionFactory) -> AsyncIterator[str]:
    settings = ingest_settings.model_copy(update={"ingest_max_body_bytes": BODY_LIMIT})
    app = web.Application()
    IngestApi(settings, session_factory, process_services(settings.sop_dir), now=utcnow).add_routes(app)
    async with TestServer(app) as server:
        yield str(server.make_url(""))


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, Any]:
    async with http.post(url, data=body, headers=AUTH) as response:
        return response.status, await response.json()


async def _counts(factory: SessionFactory) -> tuple[int, int]:
    async with factory() as session:
        messages = (await session.exec(select(func.count()).select_from(Message))).one()
        signals = (await session.exec(select(func.count()).select_from(IntentSignal))).one()
    return messages, signals


def _nested_field(record: dict[str, Any], field: str, depth: int) -> bytes:
    """A JSON array holding ``record`` with ``field`` an object nested so the whole document is ``depth`` deep."""
    inner = "[" * (depth - 3) + "]" * (depth - 3)  # the array, the record and the field's object are 3 levels
    return json.dumps([{**record, field: {"n": "__INNER__"}}]).replace('"__INNER__"', inner).encode()


async def _store_one(url: str, http: aiohttp.ClientSession, factory: SessionFactory, path: str) -> tuple[int, int]:
    """Store the path's good record; the (messages, signals) counts afterwards."""
    assert (await _post(http, url + path, json.dumps([PATHS[path][0]]).encode()))[0] == 200
    counts = await _counts(factory)
    assert counts == ((1, 1) if path == "/ingest/messages" else (0, 1))  # the message scores one signal
    return counts


def _deep_bodies() -> list[bytes]:
    return [b"[" * 2000 + b"]" * 2000, b'{"a":' * 2000 + b"1" + b"}" * 2000, b"[" * 2000]


@pytest.mark.parametrize("path", list(PATHS))
async def test_deep_json_is_400_before_parsing_and_stores_nothing(
    base_url: str, http: aiohttp.ClientSession, session_factory: SessionFactory, path: str
) -> None:
    record, field = PATHS[path]
    before = await _store_one(base_url, http, session_factory, path)
    for body in [*_deep_bodies(), _nested_field({**record, "msgid": "x", "ref": "x"}, field, MAX_JSON_DEPTH + 1)]:
        status, answer = await _post(http, base_url + path, body)
        depth = 2000 if body in _deep_bodies() else MAX_JSON_DEPTH + 1
        assert (status, answer) == (
            400,
            {
                "error": "json_too_deep",
                "message": f"JSON 嵌套过深：{depth} 层，最多 {MAX_JSON_DEPTH} 层",
                "message_en": f"body nests JSON {depth} deep; at most {MAX_JSON_DEPTH} levels are accepted",
            },
        )
    assert await _counts(session_factory) == before


@pytest.mark.parametrize("path", list(PATHS))
async def test_at_the_depth_limit_is_stored(
    base_url: str, http: aiohttp.ClientSession, session_factory: SessionFactory, path: str
) -> None:
    record, field = PATHS[path]
    status, answer = await _post(http, base_url + path, _nested_field(record, field, MAX_JSON_DEPTH))
    assert (status, answer["received"]) == (200, 1)
    messages, signals = await _counts(session_factory)
    assert (messages if path == "/ingest/messages" else signals) == 1


@pytest.mark.parametrize("path", list(PATHS))
async def test_malformed_or_oversize_json_is_refused_with_a_reason(
    base_url: str, http: aiohttp.ClientSession, session_factory: SessionFactory, path: str
) -> None:
    before = await _store_one(base_url, http, session_factory, path)
    for body, status, code in (
        (b'[{"msgid": "x",', 400, "invalid_record"),  # the existing refusal of JSON the parser rejects, with its line
        (b"[" + b"9" * 5000 + b"]", 400, "bad_json"),  # past Python's 4,300-digit integer limit: a ValueError
        (b'{"ref": "\xff"}', 400, "not_utf8"),
        (b'[{"msgid": "n", "text": "a\\u0000b", "ref": "r\\u0000"}]', 400, "unstorable_json"),  # PostgreSQL: no NUL
        (b'[{"msgid": "s", "text": "\\ud800", "ref": "\\udfff"}]', 400, "unstorable_json"),  # not UTF-8 encodable
        (b'[{"msgid": "f", "payload": {"v": NaN}, "detail": {"v": 1e400}}]', 400, "unstorable_json"),
        (b"[" + b'"x",' * (BODY_LIMIT // 4) + b"1]", 413, "body_too_large"),
    ):
        refused, answer = await _post(http, base_url + path, body)
        assert (refused, answer["error"]) == (status, code)
        assert answer["message"] and answer["message_en"]
    assert await _counts(session_factory) == before
