"""A staff member's message to the self-built app, through the router: stored once as source ``app``."""

from __future__ import annotations

from sqlmodel import select

from bot.edge.events import parse_event
from bot.runtime.handlers import register_sync_handlers
from bot.runtime.router import HandlerContext, Router
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.models import Message
from tests.conftest import TEST_CORP_ID
from tests.domain_support import process_services

APP_MESSAGE = {
    "ToUserName": TEST_CORP_ID,
    "FromUserName": "zhangwei",
    "CreateTime": "1700000000",
    "MsgType": "text",
    "Content": "明天能试驾吗",
    "MsgId": "1234567890",
    "AgentID": "1000002",
}


async def test_app_message_is_stored_once_as_staff(ingest_settings: Settings, session_factory: SessionFactory) -> None:
    router = Router()
    register_sync_handlers(router)
    ctx = HandlerContext(
        session_factory, ingest_settings, utcnow, lambda: None, process_services(ingest_settings.sop_dir)
    )
    for _ in range(2):  # a redelivery stores nothing new
        assert await router.dispatch(parse_event(APP_MESSAGE), ctx)
    async with session_factory() as session:
        rows = (await session.exec(select(Message))).all()
    assert [(r.source, r.msgid, r.sender_type, r.userid, r.text, r.sent_at.timestamp()) for r in rows] == [
        ("app", "1234567890", "staff", "zhangwei", "明天能试驾吗", 1700000000.0)
    ]
