"""Worker fixtures: the inbox on each backend (SQL on the test database, or Redis Streams) and a context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from bot.inbox.base import Inbox
from bot.inbox.redis_streams import RedisInbox
from bot.inbox.sql import SqlInbox
from bot.redis_keys import RedisKeys
from bot.runtime.router import HandlerContext
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from tests.domain_support import process_services

InboxFactory = Callable[[], Inbox]


@pytest.fixture(params=["sql", "redis"])
def inbox_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_inbox(
    inbox_kind: str, session_factory: SessionFactory, redis_url: str, redis_prefix: str
) -> AsyncIterator[InboxFactory]:
    """Inboxes on one shared store; each call stands for another process (default lanes, as the CLI uses)."""
    clients: list[aioredis.Redis] = []
    made: list[Inbox] = []

    def make() -> Inbox:
        inbox: Inbox
        if inbox_kind == "redis":
            client = aioredis.from_url(redis_url)
            clients.append(client)
            inbox = RedisInbox(client, RedisKeys(redis_prefix))
        else:
            inbox = SqlInbox(session_factory)
        made.append(inbox)
        return inbox

    yield make
    for inbox in made:
        await inbox.close()
    for client in clients:
        await client.aclose()


@pytest.fixture
def inbox(make_inbox: InboxFactory) -> Inbox:
    return make_inbox()


class OutboxNotices:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def ctx(session_factory: SessionFactory, settings: Settings) -> HandlerContext:
    return HandlerContext(
        session_factory=session_factory,
        settings=settings,
        now=utcnow,
        notify_outbox=OutboxNotices(),
        services=process_services(settings.sop_dir),
    )
