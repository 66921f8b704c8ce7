"""微信客服: fetch the messages a ``kf_msg_or_event`` callback announced, with ``kf/sync_msg``, page by page.

The callback carries only a Token (valid 10 minutes) and the OpenKfId. We page with the cursor stored in
``SyncCheckpoint(step="kf", scope=open_kfid)``, and every page is ONE transaction: its messages and the
cursor that follows them commit together. A process killed at any point therefore resumes from the last
committed cursor: the page in flight is fetched again (no loss) and its messages are already stored or not
at all (no duplicates; msgid is unique per corp and source anyway).

Syncs of one open_kfid are serialized: in-process by a lock per (corp, open_kfid); across processes by a
compare-and-set on the stored cursor (a page fetched from a cursor another process has since moved past is
discarded and the loop continues from the newer cursor).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import update
from sqlmodel import col, select

from bot.wecom.errors import WeComError
from scrm.db import SessionFactory, write_transaction
from scrm.intent.ingest import IncomingMessage, store_message
from scrm.models import SyncCheckpoint
from scrm.rows import get_or_create
from scrm.services import Services

log = logging.getLogger(__name__)

SYNC_MSG = "/cgi-bin/kf/sync_msg"
CHECKPOINT_STEP = "kf"
MAX_LIMIT = 1000
ERR_INVALID_MSG_TOKEN = 95007  # the callback token expired (10 min) or is unknown: page without it
ORIGIN_CUSTOMER, ORIGIN_SYSTEM, ORIGIN_SERVICER = 3, 4, 5


class KfApi(Protocol):
    """The part of :class:`bot.wecom.client.WeComClient` a kf sync needs."""

    async def call(self, method: str, path: str, *, json: dict[str, Any] | None = None) -> dict[str, Any]: ...


@dataclass(slots=True)
class KfSyncReport:
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    skipped: int = 0  # system events and duplicates of other sources' rows are not messages to store
    conflicts: int = 0  # pages discarded because another process moved the cursor first


PageHook = Callable[[str, str], Awaitable[None]]  # (open_kfid, committed cursor)

_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _lock_for(corp_id: str, open_kfid: str) -> asyncio.Lock:
    lock = _locks.get((corp_id, open_kfid))
    if lock is None:
        lock = asyncio.Lock()
        _locks[(corp_id, open_kfid)] = lock
    return lock


class KfSync:
    """Pages ``kf/sync_msg`` for one corp into the messages table."""

    def __init__(
        self,
        api: KfApi,
        session_factory: SessionFactory,
        corp_id: str,
        *,
        services: Services,
        now: Callable[[], datetime],
        limit: int = MAX_LIMIT,
        on_page_committed: PageHook | None = None,
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
        self._api = api
        self._factory = session_factory
        self._corp_id = corp_id
        self._services = services
        self._now = now
        self._limit = limit
        self._on_page_committed = on_page_committed

    async def run(self, open_kfid: str, token: str = "") -> KfSyncReport:
        """Fetch and store every waiting message of ``open_kfid``; returns what happened."""
        if not open_kfid:
            raise ValueError("open_kfid is empty")
        async with _lock_for(self._corp_id, open_kfid):
            return await self._run(open_kfid, token)

    async def _run(self, open_kfid: str, token: str) -> KfSyncReport:
        report = KfSyncReport()
        cursor = await self._load_cursor(open_kfid)
        while True:
            body, token = await self._fetch(open_kfid, cursor, token)
            next_cursor = str(body.get("next_cursor") or cursor)
            msg_list = body.get("msg_list") or []
            report.pages += 1
            report.fetched += len(msg_list)
            async with write_transaction(self._factory) as session:
                conn = await session.connection()
                moved = await conn.execute(
                    update(SyncCheckpoint)
                    .where(
                        col(SyncCheckpoint.corp_id) == self._corp_id,
                        col(SyncCheckpoint.step) == CHECKPOINT_STEP,
                        col(SyncCheckpoint.scope) == open_kfid,
                        col(SyncCheckpoint.cursor) == cursor,
                    )
                    .values(cursor=next_cursor, updated_at=self._now())
                )
                if moved.rowcount != 1:  # another process committed this page first: store nothing
                    report.conflicts += 1
                else:
                    for raw in msg_list:
                        incoming = kf_message(raw, now=self._now())
                        if incoming is None:
                            report.skipped += 1
                        elif await store_message(
                            session,
                            self._corp_id,
                            incoming,
                            intent=self._services.intent,
                            hooks=self._services,
                            now=self._now(),
                        ):
                            report.stored += 1
                        else:
                            report.skipped += 1
            if moved.rowcount != 1:
                cursor = await self._load_cursor(open_kfid)
                continue
            cursor = next_cursor
            if self._on_page_committed is not None:
                await self._on_page_committed(open_kfid, cursor)
            if not body.get("has_more"):
                break
        log.info(
            "kf sync done",
            extra={"open_kfid": open_kfid, "pages": report.pages, "stored": report.stored, "corp_id": self._corp_id},
        )
        return report

    async def _load_cursor(self, open_kfid: str) -> str:
        async with write_transaction(self._factory) as session:
            checkpoint, _ = await get_or_create(
                session,
                SyncCheckpoint,
                {"corp_id": self._corp_id, "step": CHECKPOINT_STEP, "scope": open_kfid},
                {"cursor": ""},
            )
            return checkpoint.cursor

    async def _fetch(self, open_kfid: str, cursor: str, token: str) -> tuple[dict[str, Any], str]:
        """One sync_msg page; an expired callback token is dropped and the call made without it."""
        request: dict[str, Any] = {"cursor": cursor, "limit": self._limit, "open_kfid": open_kfid}
        if token:
            try:
                return await self._api.call("POST", SYNC_MSG, json={**request, "token": token}), token
            except WeComError as exc:
                if exc.errcode != ERR_INVALID_MSG_TOKEN:
                    raise
                log.info("kf token no longer valid; paging without it", extra={"open_kfid": open_kfid})
        return await self._api.call("POST", SYNC_MSG, json=request), ""


async def stored_cursor(session_factory: SessionFactory, corp_id: str, open_kfid: str) -> str | None:
    """The committed cursor of ``open_kfid`` (None before its first sync)."""
    async with session_factory() as session:
        stmt = select(SyncCheckpoint.cursor).where(
            SyncCheckpoint.corp_id == corp_id, SyncCheckpoint.step == CHECKPOINT_STEP, SyncCheckpoint.scope == open_kfid
        )
        return (await session.exec(stmt)).first()


def kf_message(raw: Any, *, now: datetime) -> IncomingMessage | None:
    """A sync_msg ``msg_list`` item as a message; None for system events (origin 4) and malformed items."""
    if not isinstance(raw, dict):
        return None
    msgid = str(raw.get("msgid") or "")
    origin = raw.get("origin")
    msgtype = str(raw.get("msgtype") or "")
    if not msgid or origin == ORIGIN_SYSTEM or msgtype == "event":
        return None
    send_time = raw.get("send_time")
    sent_at = datetime.fromtimestamp(int(send_time), UTC) if isinstance(send_time, int | float) else now
    text_part = raw.get("text")
    text = str(text_part.get("content", "")) if msgtype == "text" and isinstance(text_part, dict) else ""
    servicer = origin == ORIGIN_SERVICER
    return IncomingMessage(
        source="kf",
        msgid=msgid,
        sent_at=sent_at,
        chat_type="single",
        external_userid=str(raw.get("external_userid") or ""),
        userid=str(raw.get("servicer_userid") or "") if servicer else "",
        sender_type="staff" if servicer else "customer",
        msgtype=msgtype or "text",
        text=text,
        payload=raw,
    )
