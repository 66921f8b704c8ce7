"""Store chat messages from every source, once each, and hand new customer messages to the intent pipeline.

Every source (微信客服 sync_msg, AI bot callbacks, self-built app messages, the chat-archive ingest endpoint
and ``lianyi ingest messages``) builds an :class:`IncomingMessage` and calls :func:`store_message` inside its
own transaction. Bulk sources (the ingest endpoints and the CLI) go through :func:`store_messages` and
:func:`record_behaviours`, which commit in short write transactions (:class:`BatchLimits`: so many records or
so long, whichever comes first): on SQLite the file has one writer, and one 5,000-record transaction held it for
tens of seconds while callbacks waited to be acknowledged. Between batches the inbox's waiting puts go first, then
the other writers in turn (:func:`scrm.db.write_transaction`).

The row is inserted with ``ON CONFLICT DO NOTHING`` on (corp, source, msgid), so a replayed
page, a retried callback or a re-imported file stores nothing twice; only a newly inserted customer or staff
message reaches :func:`scrm.intent.pipeline.on_message_stored`, in the same transaction (a staff member's
message may be the first contact on a lead).

Archive records and behaviours arrive as JSON objects; :func:`parse_message_record` and
:func:`parse_behaviour_record` validate them with errors in Chinese and English (the operator and the
integrator both read them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db import SessionFactory, write_transaction
from scrm.errors import LianyiError
from scrm.intent import pipeline
from scrm.intent.rules import IntentRulesError
from scrm.intent.services import IntentServices
from scrm.lifecycle import LifecycleHooks
from scrm.models import Message
from scrm.privacy.tombstones import erased_before
from scrm.rows import get_or_create

log = logging.getLogger(__name__)

T = TypeVar("T")

SOURCES = ("kf", "aibot", "app", "archive")
CHAT_TYPES = ("single", "group")
SENDER_TYPES = ("customer", "staff", "bot")
BEHAVIOUR_KINDS = ("form", "test_drive_booking")  # 留资 is a form


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message as a source saw it, before it is a row."""

    source: str
    msgid: str
    sent_at: datetime
    chat_type: str = "single"
    chat_id: str = ""
    external_userid: str = ""
    userid: str = ""
    sender_type: str = "customer"
    msgtype: str = "text"
    text: str = ""
    payload: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class IncomingBehaviour:
    """A behaviour reported by another system: a form, a test-drive booking, 留资."""

    kind: str
    external_userid: str
    ref: str
    at: datetime
    detail: dict[str, Any] | None = field(default=None, compare=False)


class InvalidRecord(LianyiError):
    """A message or behaviour record that cannot be stored; ``zh`` is for the operator, ``en`` for logs/APIs."""

    def __init__(self, zh: str, en: str, *, line: int | None = None) -> None:
        prefix_zh = f"第 {line} 行：" if line is not None else ""
        prefix_en = f"line {line}: " if line is not None else ""
        super().__init__(prefix_en + en)
        self.zh = prefix_zh + zh
        self.en = prefix_en + en
        self.line = line


# ---- storing --------------------------------------------------------------------------------------------


async def store_message(
    session: AsyncSession,
    corp_id: str,
    incoming: IncomingMessage,
    *,
    intent: IntentServices,
    hooks: LifecycleHooks,
    now: datetime,
) -> bool:
    """Insert the message unless (corp, source, msgid) is stored already; True when it is new.

    A new customer or staff message goes on to the intent pipeline in this same transaction. A message about a
    customer erased after it was sent is dropped (False).
    """
    if await erased_before(session, corp_id, incoming.external_userid, incoming.sent_at):
        log.info("message older than the customer's erasure dropped", extra={"source": incoming.source})
        return False
    values: dict[str, Any] = {
        "chat_type": incoming.chat_type,
        "chat_id": incoming.chat_id,
        "external_userid": incoming.external_userid,
        "userid": incoming.userid,
        "sender_type": incoming.sender_type,
        "msgtype": incoming.msgtype,
        "text": incoming.text,
        "sent_at": incoming.sent_at,
        "received_at": now,
        "payload": incoming.payload,
    }
    keys = {"corp_id": corp_id, "source": incoming.source, "msgid": incoming.msgid}
    message, created = await get_or_create(session, Message, keys, values, insert_first=True)
    if created and message.sender_type in ("customer", "staff"):
        await pipeline.on_message_stored(session, corp_id, message, intent=intent, hooks=hooks, now=now)
    return created


async def record_behaviour(
    session: AsyncSession,
    corp_id: str,
    behaviour: IncomingBehaviour,
    *,
    intent: IntentServices,
    hooks: LifecycleHooks,
) -> None:
    """Hand a behaviour to the scoring pipeline (it deduplicates by ``ref``); dropped when the customer was erased
    after it happened."""
    if await erased_before(session, corp_id, behaviour.external_userid, behaviour.at):
        log.info("behaviour older than the customer's erasure dropped", extra={"kind": behaviour.kind})
        return
    await pipeline.on_behaviour(
        session,
        corp_id,
        behaviour.external_userid,
        kind=behaviour.kind,
        ref=behaviour.ref,
        at=behaviour.at,
        detail=behaviour.detail,
        intent=intent,
        hooks=hooks,
    )


# ---- bulk: bounded write transactions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a bulk write transaction commits: after ``records`` records, or as soon as it has run ``seconds``
    (a record that hands off a lead costs many times one that only scores; machines differ)."""

    records: int = 100
    seconds: float = 0.2

    def __post_init__(self) -> None:
        if self.records < 1 or self.seconds < 0:
            raise ValueError("a batch needs records >= 1 and seconds >= 0")


async def _in_batches(
    factory: SessionFactory,
    items: Sequence[T],
    limits: BatchLimits,
    store: Callable[[AsyncSession, T], Awaitable[bool]],
) -> int:
    """``store`` each item, in write transactions bounded by ``limits``; returns how many ``store`` called new.

    Between batches every waiting acknowledgement (the inbox's put) goes first, then the other waiting writers in
    turn (the worker's events): a bulk ingest neither holds the write lock for long nor starves under steady
    traffic. A failure raises after the earlier batches committed.
    """
    position, stored = 0, 0
    while position < len(items):
        new_in_batch = 0
        async with write_transaction(factory) as session:
            started = time.monotonic()
            last = min(len(items), position + limits.records)
            while position < last:
                new_in_batch += bool(await store(session, items[position]))
                position += 1
                if time.monotonic() - started >= limits.seconds:
                    break
        stored += new_in_batch
        await asyncio.sleep(0)  # whatever waited for the event loop runs before the next batch
    return stored


async def _warm_classifier(intent: IntentServices) -> None:
    """Load (and train the model of) intent.yaml in a thread, not on the event loop in the first batch; a broken
    file is the pipeline's business (it leaves messages unclassified and logs why)."""
    with contextlib.suppress(IntentRulesError):
        await asyncio.to_thread(intent.classifier)


async def store_messages(
    factory: SessionFactory,
    corp_id: str,
    incoming: Sequence[IncomingMessage],
    *,
    limits: BatchLimits,
    intent: IntentServices,
    hooks: LifecycleHooks,
    now: Callable[[], datetime],
) -> int:
    """Store ``incoming`` in write transactions bounded by ``limits``; returns how many were new.

    A batch commits as a whole or not at all. Each record is deduplicated by (corp, source, msgid), so sending
    the same records again after a failure part-way completes the run and adds nothing else. Scoring is per
    message on what is committed plus the batch so far, exactly as in one transaction: a contact whose
    messages span two batches ends with the same signals, score and history.
    """
    await _warm_classifier(intent)

    async def store(session: AsyncSession, item: IncomingMessage) -> bool:
        return await store_message(session, corp_id, item, intent=intent, hooks=hooks, now=now())

    return await _in_batches(factory, incoming, limits, store)


async def record_behaviours(
    factory: SessionFactory,
    corp_id: str,
    behaviours: Sequence[IncomingBehaviour],
    *,
    limits: BatchLimits,
    intent: IntentServices,
    hooks: LifecycleHooks,
) -> None:
    """:func:`record_behaviour` for each, in write transactions bounded by ``limits`` (see :func:`store_messages`;
    a behaviour is deduplicated by its ``ref``)."""
    await _warm_classifier(intent)

    async def record(session: AsyncSession, behaviour: IncomingBehaviour) -> bool:
        await record_behaviour(session, corp_id, behaviour, intent=intent, hooks=hooks)
        return True

    await _in_batches(factory, behaviours, limits, record)


# ---- records (archive ingest, behaviours) ---------------------------------------------------------------


def parse_timestamp(value: Any, *, name: str, line: int | None = None) -> datetime:
    """Epoch seconds or milliseconds, or an ISO 8601 string with an offset; always UTC-aware."""
    if isinstance(value, bool):
        raise InvalidRecord(f"{name} 不是时间", f"{name} is not a time", line=line)
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidRecord(f"{name} 超出范围", f"{name} is out of range", line=line) from None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRecord(
                f"{name} 不是 ISO 8601 时间：{value[:40]}", f"{name} is not ISO 8601: {value[:40]!r}", line=line
            ) from None
        if parsed.tzinfo is None:
            raise InvalidRecord(
                f"{name} 缺少时区（例如 +08:00）", f"{name} needs a UTC offset (e.g. +08:00)", line=line
            )
        return parsed.astimezone(UTC)
    raise InvalidRecord(f"缺少 {name}", f"{name} is missing", line=line)


def _text(record: Mapping[str, Any], name: str, *, default: str = "", limit: int, line: int | None) -> str:
    value = record.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, str):
        raise InvalidRecord(f"{name} 必须是字符串", f"{name} must be a string", line=line)
    if len(value) > limit:
        raise InvalidRecord(f"{name} 超过 {limit} 个字符", f"{name} is longer than {limit} characters", line=line)
    return value


def _choice(record: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str, line: int | None) -> str:
    value = _text(record, name, default=default, limit=32, line=line) or default
    if value not in choices:
        allowed = " / ".join(choices)
        raise InvalidRecord(f"{name} 只能是 {allowed}", f"{name} must be one of {allowed}", line=line)
    return value


def _object(record: Mapping[str, Any], name: str, line: int | None) -> dict[str, Any] | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRecord(f"{name} 必须是对象", f"{name} must be an object", line=line)
    return value


def parse_message_record(record: Any, *, line: int | None = None, default_source: str = "archive") -> IncomingMessage:
    """An archive record: ``{"msgid", "sent_at", "text", "external_userid" | "chat_id", …}``.

    ``sender_type`` is customer (default), staff or bot; a customer message needs ``external_userid``.
    """
    if not isinstance(record, dict):
        raise InvalidRecord("每条记录必须是 JSON 对象", "each record must be a JSON object", line=line)
    msgid = _text(record, "msgid", limit=128, line=line)
    if not msgid:
        raise InvalidRecord("缺少 msgid", "msgid is missing", line=line)
    source = _choice(record, "source", SOURCES, default_source, line)
    chat_type = _choice(record, "chat_type", CHAT_TYPES, "single", line)
    sender_type = _choice(record, "sender_type", SENDER_TYPES, "customer", line)
    chat_id = _text(record, "chat_id", limit=128, line=line)
    external_userid = _text(record, "external_userid", limit=128, line=line)
    if chat_type == "group" and not chat_id:
        raise InvalidRecord("群消息缺少 chat_id", "a group message needs chat_id", line=line)
    if sender_type == "customer" and not external_userid:
        raise InvalidRecord("客户消息缺少 external_userid", "a customer message needs external_userid", line=line)
    return IncomingMessage(
        source=source,
        msgid=msgid,
        sent_at=parse_timestamp(record.get("sent_at"), name="sent_at", line=line),
        chat_type=chat_type,
        chat_id=chat_id,
        external_userid=external_userid,
        userid=_text(record, "userid", limit=64, line=line),
        sender_type=sender_type,
        msgtype=_text(record, "msgtype", default="text", limit=32, line=line) or "text",
        text=_text(record, "text", limit=20000, line=line),
        payload=_object(record, "payload", line),
    )


def parse_behaviour_record(record: Any, *, line: int | None = None) -> IncomingBehaviour:
    """A behaviour: ``{"kind": "form" | "test_drive_booking", "external_userid", "ref", "at", "detail"?}``."""
    if not isinstance(record, dict):
        raise InvalidRecord("每条记录必须是 JSON 对象", "each record must be a JSON object", line=line)
    kind = _text(record, "kind", limit=32, line=line)
    if kind not in BEHAVIOUR_KINDS:
        allowed = " / ".join(BEHAVIOUR_KINDS)
        raise InvalidRecord(f"kind 只能是 {allowed}", f"kind must be one of {allowed}", line=line)
    external_userid = _text(record, "external_userid", limit=128, line=line)
    if not external_userid:
        raise InvalidRecord("缺少 external_userid", "external_userid is missing", line=line)
    ref = _text(record, "ref", limit=200, line=line)
    if not ref:
        raise InvalidRecord("缺少 ref（表单或预约的唯一编号）", "ref (the form or booking id) is missing", line=line)
    return IncomingBehaviour(
        kind=kind,
        external_userid=external_userid,
        ref=f"{kind}:{ref}",
        at=parse_timestamp(record.get("at"), name="at", line=line),
        detail=_object(record, "detail", line),
    )


def load_records(document: str) -> list[tuple[int, Any]]:
    """A JSON array, or JSON lines (blank lines skipped), as (line or position, value) pairs."""
    stripped = document.strip()
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidRecord(f"JSON 格式错误：{exc.msg}", f"invalid JSON: {exc.msg}", line=exc.lineno) from None
        return list(enumerate(values, start=1))
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(document.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InvalidRecord(f"JSON 格式错误：{exc.msg}", f"invalid JSON: {exc.msg}", line=number) from None
    return records
