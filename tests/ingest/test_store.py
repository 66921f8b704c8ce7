"""store_message: one row per (corp, source, msgid); archive records validated with bilingual errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.intent.ingest import IncomingMessage, InvalidRecord, load_records, parse_message_record, store_message
from scrm.models import Message
from tests.domain_support import intent_for, process_services
from tests.ingest.conftest import SOP_DIR

CORP = "wwcorp0001"
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


async def _store(factory: SessionFactory, incoming: IncomingMessage) -> bool:
    async with write_transaction(factory) as session:
        return await store_message(
            session, CORP, incoming, intent=intent_for(SOP_DIR), hooks=process_services(SOP_DIR), now=NOW
        )


async def test_same_msgid_is_stored_once_per_source(session_factory: SessionFactory) -> None:
    first = IncomingMessage(source="archive", msgid="m1", sent_at=NOW, external_userid="wmA", text="多少钱")
    assert await _store(session_factory, first) is True
    assert await _store(session_factory, first) is False
    assert await _store(session_factory, IncomingMessage(source="kf", msgid="m1", sent_at=NOW, external_userid="wmA"))
    async with session_factory() as session:
        rows = (await session.exec(select(Message).order_by(col(Message.id)))).all()
    assert [(r.source, r.msgid, r.text) for r in rows] == [("archive", "m1", "多少钱"), ("kf", "m1", "")]


def test_archive_record_fields_and_errors() -> None:
    record = {"msgid": "a1", "sent_at": 1763870400, "chat_type": "group", "chat_id": "wrX", "external_userid": "wmB"}
    parsed = parse_message_record(record)
    assert (parsed.source, parsed.chat_id, parsed.sent_at) == (
        "archive",
        "wrX",
        datetime(2025, 11, 23, 4, 0, tzinfo=UTC),
    )
    assert parse_message_record({**record, "sent_at": "2025-11-23T12:00:00+08:00"}).sent_at == parsed.sent_at
    with pytest.raises(InvalidRecord) as missing:
        parse_message_record({"sent_at": 1}, line=7)
    assert missing.value.zh == "第 7 行：缺少 msgid"
    with pytest.raises(InvalidRecord, match="needs external_userid"):
        parse_message_record({"msgid": "x", "sent_at": 1})
    with pytest.raises(InvalidRecord, match="UTC offset"):
        parse_message_record({**record, "sent_at": "2025-11-23T12:00:00"})
    with pytest.raises(InvalidRecord, match="line 2: invalid JSON"):
        load_records('{"msgid": "a"}\n{oops\n')
