"""The AI bot endpoint: JSON callbacks encrypted with receive id "", verified, deduplicated by msgid."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlmodel import col, select

from bot.edge.aibot import ENVELOPE_MAX_DEPTH, MESSAGE_MAX_DEPTH, AiBotEndpoint
from bot.edge.crypto import CallbackCrypto
from bot.emulator.aibot_sender import AiBotSender, aibot_text_message
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.models import Message
from tests.conftest import TEST_AES_KEY
from tests.domain_support import process_services
from tests.ingest.conftest import AIBOT_TOKEN


@pytest.fixture
async def sender(
    ingest_settings: Settings, session_factory: SessionFactory, http: aiohttp.ClientSession
) -> AsyncIterator[AiBotSender]:
    app = web.Application()
    services = process_services(ingest_settings.sop_dir)
    AiBotEndpoint(ingest_settings, session_factory, services, now=utcnow).add_routes(app)
    async with TestServer(app) as server:
        yield AiBotSender(str(server.make_url("/wecom/aibot")), AIBOT_TOKEN, TEST_AES_KEY, http=http)


async def _messages(factory: SessionFactory) -> list[Message]:
    async with factory() as session:
        return list((await session.exec(select(Message).order_by(col(Message.id)))).all())


async def test_group_mention_is_stored_once_with_its_chat(sender: AiBotSender, session_factory: SessionFactory) -> None:
    message = aibot_text_message(aibotid="aib1", userid="wmGuest1", text="@小涟 这款车有现车吗", chatid="wrGroup1")
    assert await sender.send(message) == 200
    assert await sender.send(message) == 200  # WeCom's retry: stored once
    staff = aibot_text_message(aibotid="aib1", userid="zhangwei", text="@小涟 今天的活动", chatid="wrGroup1")
    assert await sender.send(staff) == 200
    rows = await _messages(session_factory)
    assert [(r.source, r.chat_type, r.chat_id, r.sender_type, r.external_userid, r.userid, r.text) for r in rows] == [
        ("aibot", "group", "wrGroup1", "customer", "wmGuest1", "", "@小涟 这款车有现车吗"),
        ("aibot", "group", "wrGroup1", "staff", "", "zhangwei", "@小涟 今天的活动"),
    ]


async def test_url_check_answers_the_plaintext(sender: AiBotSender) -> None:
    assert await sender.verify_url("hello-aibot") == (200, "hello-aibot")


async def test_forged_signature_and_bad_json_are_refused(sender: AiBotSender, session_factory: SessionFactory) -> None:
    params, body = sender.build(aibot_text_message(aibotid="aib1", userid="wmGuest1", text="多少钱"))
    assert await sender.post({**params, "msg_signature": "0" * 40}, body) == 403
    assert await sender.post(params, b"{not json") == 400
    assert await sender.post(params, json.dumps({"encrypt": 1}).encode()) == 400
    forged = AiBotSender(sender.url, "OtherToken", TEST_AES_KEY, http=sender._http)
    assert await forged.send(aibot_text_message(aibotid="aib1", userid="wmGuest1", text="多少钱")) == 403
    assert await _messages(session_factory) == []


def _signed(plaintext: str, **envelope: object) -> tuple[dict[str, str], bytes]:
    """A correctly signed callback whose decrypted message is ``plaintext`` as given (no json.dumps of it)."""
    timestamp, nonce = str(int(time.time())), "20261207"
    encrypt, signature = CallbackCrypto(AIBOT_TOKEN, TEST_AES_KEY, "").encrypt(
        plaintext, nonce=nonce, timestamp=timestamp
    )
    params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}
    return params, json.dumps({"encrypt": encrypt, **envelope}).encode()


def _refusal_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    reasons = [str(getattr(r, "reason", "")) for r in caplog.records if r.name == "bot.edge.aibot"]
    caplog.clear()
    return reasons


async def test_deep_or_oversize_json_is_400_before_the_signature_and_harms_nothing(
    sender: AiBotSender, session_factory: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    assert await sender.send(aibot_text_message(aibotid="aib1", userid="wmGuest1", text="首条", msgid="m1")) == 200
    params, _ = sender.build(aibot_text_message(aibotid="aib1", userid="wmGuest1", text="多少钱"))
    caplog.clear()
    deep_arrays, deep_objects = b"[" * 2000 + b"]" * 2000, b'{"a":' * 2000 + b"1" + b"}" * 2000
    for body in (deep_arrays, deep_objects, b'{"encrypt": "x", "a": [[1]]}'):  # the last is one over the limit
        assert await sender.post(params, body) == 400
    assert _refusal_reasons(caplog) == ["json_too_deep"] * 3
    assert await sender.post(params, b'{"encrypt": "' + b"A" * 70_000 + b'"}') == 413
    assert await sender.post(params, b'{"encrypt": 1' + b"0" * 5000 + b"}") == 400
    assert await sender.post(params, b"[1]") == 400
    assert _refusal_reasons(caplog) == ["body_too_large", "bad_json", "not_object"]
    assert [m.msgid for m in await _messages(session_factory)] == ["m1"]


async def test_envelope_at_its_depth_limit_is_accepted(sender: AiBotSender, session_factory: SessionFactory) -> None:
    message = aibot_text_message(aibotid="aib1", userid="wmGuest1", text="有现车吗", msgid="m-envelope")
    assert ENVELOPE_MAX_DEPTH == 2
    assert await sender.post(*_signed(json.dumps(message), extra={"a": 1})) == 200
    assert [m.msgid for m in await _messages(session_factory)] == ["m-envelope"]


async def test_signed_message_nested_too_deep_is_400_and_at_the_limit_stored(
    sender: AiBotSender, session_factory: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    head = json.dumps(aibot_text_message(aibotid="aib1", userid="wmGuest1", text="试驾", msgid="m-deep"))[:-1]
    for depth in (2000, MESSAGE_MAX_DEPTH + 1):  # the message object itself is one level
        nested = "[" * (depth - 1) + "]" * (depth - 1)
        caplog.clear()
        assert await sender.post(*_signed(f'{head}, "extra": {nested}}}')) == 400
        assert _refusal_reasons(caplog) == ["json_too_deep"]
    caplog.clear()
    assert await sender.post(*_signed(f'{head}, "extra": "NUL \\u0000"}}')) == 400  # PostgreSQL stores no NUL
    assert _refusal_reasons(caplog) == ["unstorable_json"]
    at_limit = "[" * (MESSAGE_MAX_DEPTH - 1) + "]" * (MESSAGE_MAX_DEPTH - 1)
    assert await sender.post(*_signed(f'{head}, "extra": {at_limit}}}')) == 200
    assert [m.msgid for m in await _messages(session_factory)] == ["m-deep"]


async def test_a_create_time_out_of_range_is_the_time_of_receipt(
    sender: AiBotSender, session_factory: SessionFactory
) -> None:
    received_from = int(utcnow().timestamp())  # whole seconds: a database may keep no more
    for n, created in enumerate((10**20, -(10**15), 1_765_000_000)):
        message = aibot_text_message(aibotid="aib1", userid="wmGuest1", text="在吗", msgid=f"t{n}")
        assert await sender.send({**message, "create_time": created}) == 200
    received_until = utcnow().timestamp()
    rows = await _messages(session_factory)
    assert [r.msgid for r in rows] == ["t0", "t1", "t2"]
    assert rows[2].sent_at.timestamp() == 1_765_000_000
    assert all(received_from <= r.sent_at.timestamp() <= received_until for r in rows[:2])
