"""The AI bot endpoint: JSON callbacks encrypted with receive id "", verified, deduplicated by msgid."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlmodel import col, select

from bot.edge.aibot import AiBotEndpoint
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
