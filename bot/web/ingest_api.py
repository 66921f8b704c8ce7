"""Authenticated ingest endpoints for other systems: a chat-archive (会话内容存档) puller, forms and bookings.

- ``POST /ingest/messages``: message records (see :func:`scrm.intent.ingest.parse_message_record`), stored once
  per (source, msgid); answers ``{"received", "stored", "duplicates"}``.
- ``POST /ingest/behaviours``: forms, test-drive bookings, 留资 (:func:`scrm.intent.ingest.parse_behaviour_record`)
  for the lead score; answers ``{"received", "accepted"}``.

Both take a JSON array or JSON lines, at most ``MAX_RECORDS`` records and ``LIANYI_INGEST_MAX_BODY_BYTES``
bytes, nested at most ``MAX_JSON_DEPTH`` deep (measured before parsing; deeper → 400 ``json_too_deep``), with
``Authorization: Bearer <LIANYI_INGEST_TOKEN>`` (compared in constant time). Every record is validated before
the first is stored (one bad record → 400, nothing stored). They are then stored in short write transactions (at
most ``LIANYI_INGEST_BATCH_RECORDS`` records, about ``LIANYI_INGEST_BATCH_SECONDS`` long), so a large request never
holds SQLite's write lock for long. Records are deduplicated (messages by source + msgid, behaviours by kind +
ref): a request that failed part-way, sent again, stores the rest and nothing twice.
Errors are JSON ``{"error": code, "message": 中文, "message_en": English, "line"?: n}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from bot.edge.body import BodyTooLarge, read_body
from bot.edge.bounded_json import JsonRefused, check_json_depth, require_storable, unparsable
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.errors import LianyiError
from scrm.intent.ingest import (
    BatchLimits,
    InvalidRecord,
    load_records,
    parse_behaviour_record,
    parse_message_record,
    record_behaviours,
    store_messages,
)
from scrm.services import Services

log = logging.getLogger(__name__)

MESSAGES_PATH = "/ingest/messages"
BEHAVIOURS_PATH = "/ingest/behaviours"
MAX_RECORDS = 5000
MAX_JSON_DEPTH = 32  # the array, the record, and 30 levels inside a record's fields


class IngestRefused(LianyiError):
    """An ingest request refused with ``status`` and a bilingual message."""

    def __init__(self, status: int, code: str, zh: str, en: str, *, line: int | None = None) -> None:
        super().__init__(en)
        self.status, self.code, self.zh, self.en, self.line = status, code, zh, en, line

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.code, "message": self.zh, "message_en": self.en}
        if self.line is not None:
            body["line"] = self.line
        headers = {"WWW-Authenticate": 'Bearer realm="lianyi-ingest"'} if self.status == 401 else None
        return web.json_response(body, status=self.status, headers=headers, dumps=_dumps)


def ingest_limits(settings: Settings) -> BatchLimits:
    """How long one ingest write transaction may grow (``LIANYI_INGEST_BATCH_RECORDS`` / ``_SECONDS``)."""
    return BatchLimits(records=settings.ingest_batch_records, seconds=settings.ingest_batch_seconds)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class IngestApi:
    """The two ingest routes for one corp."""

    def __init__(
        self, settings: Settings, session_factory: SessionFactory, services: Services, *, now: Callable[[], datetime]
    ) -> None:
        if not settings.ingest_token:
            raise ValueError("the ingest endpoints need LIANYI_INGEST_TOKEN")
        self._settings = settings
        self._factory = session_factory
        self._services = services
        self._now = now
        self._token_digest = hashlib.sha256(settings.ingest_token.encode()).digest()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(MESSAGES_PATH, self._messages)
        app.router.add_post(BEHAVIOURS_PATH, self._behaviours)

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            records = await self._records(request)
            incoming = [parse_message_record(record, line=line) for line, record in records]
            stored = await store_messages(
                self._factory,
                self._settings.corp_id,
                incoming,
                limits=ingest_limits(self._settings),
                intent=self._services.intent,
                hooks=self._services,
                now=self._now,
            )
        except InvalidRecord as exc:
            return IngestRefused(400, "invalid_record", exc.zh, exc.en, line=exc.line).response()
        except IngestRefused as exc:
            return exc.response()
        log.info("ingested messages", extra={"received": len(incoming), "stored": stored})
        return web.json_response({"received": len(incoming), "stored": stored, "duplicates": len(incoming) - stored})

    async def _behaviours(self, request: web.Request) -> web.Response:
        try:
            records = await self._records(request)
            behaviours = [parse_behaviour_record(record, line=line) for line, record in records]
            await record_behaviours(
                self._factory,
                self._settings.corp_id,
                behaviours,
                limits=ingest_limits(self._settings),
                intent=self._services.intent,
                hooks=self._services,
            )
        except InvalidRecord as exc:
            return IngestRefused(400, "invalid_record", exc.zh, exc.en, line=exc.line).response()
        except IngestRefused as exc:
            return exc.response()
        log.info("ingested behaviours", extra={"received": len(behaviours)})
        return web.json_response({"received": len(behaviours), "accepted": len(behaviours)})

    async def _records(self, request: web.Request) -> list[tuple[int, Any]]:
        """Authenticate, read the body within the limit, split it into records."""
        self._authenticate(request.headers.get("Authorization", ""))
        body = await _read_body(request, self._settings.ingest_max_body_bytes)
        try:
            check_json_depth(body, MAX_JSON_DEPTH)
            document = body.decode("utf-8")
            records = load_records(document)
            require_storable([record for _, record in records])
        except JsonRefused as exc:
            raise IngestRefused(400, exc.code, exc.zh, exc.en) from None
        except UnicodeDecodeError:
            raise IngestRefused(400, "not_utf8", "请求体不是 UTF-8 编码", "body is not UTF-8") from None
        except ValueError as exc:  # json's own, not a JSONDecodeError: an integer past Python's 4,300 digits
            refused = unparsable(exc)
            raise IngestRefused(400, refused.code, refused.zh, refused.en) from None
        if not records:
            raise IngestRefused(400, "empty", "请求体中没有记录", "the body holds no records")
        if len(records) > MAX_RECORDS:
            raise IngestRefused(
                413,
                "too_many_records",
                f"一次最多 {MAX_RECORDS} 条记录（收到 {len(records)} 条），请分批发送",
                f"at most {MAX_RECORDS} records per request (got {len(records)}); send them in batches",
            )
        return records

    def _authenticate(self, header: str) -> None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IngestRefused(401, "unauthorized", "缺少访问令牌（Authorization: Bearer …）", "missing bearer token")
        offered = hashlib.sha256(token.strip().encode()).digest()
        if not hmac.compare_digest(offered, self._token_digest):
            raise IngestRefused(401, "unauthorized", "访问令牌无效", "invalid bearer token")


async def _read_body(request: web.Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except BodyTooLarge:
        message = f"body exceeds {limit} bytes; send it in batches"
        raise IngestRefused(413, "body_too_large", f"请求体超过 {limit} 字节，请分批发送", message) from None
