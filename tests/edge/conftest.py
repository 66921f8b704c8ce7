"""Fixtures for the callback edge: a real HTTP server around CallbackEdge, the real SQL inbox, log checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.edge.callback import CallbackEdge
from bot.inbox.base import Inbox
from bot.inbox.sql import SqlInbox
from bot.metrics import REGISTRY
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.models import InboxEvent
from tests.edge.wecom_callbacks import NOW, CallbackSigner

PATH = "/wecom/callback"
EdgeClient = TestClient[web.Request, web.Application]
Rows = Callable[[], Awaitable[list[InboxEvent]]]
ClientFactory = Callable[..., Awaitable[EdgeClient]]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Start a real aiohttp server with the edge mounted; the edge's wall clock reads ``now``."""
    clients: list[EdgeClient] = []

    async def start(settings: Settings, inbox: Inbox, *, now: float = NOW) -> EdgeClient:
        app = web.Application()
        CallbackEdge(settings, inbox, clock=lambda: now).add_routes(app)
        client: EdgeClient = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def inbox(session_factory: SessionFactory) -> AsyncIterator[SqlInbox]:
    sql_inbox = SqlInbox(session_factory, partitions=4)
    yield sql_inbox
    await sql_inbox.close()


@pytest.fixture
async def client(make_client: ClientFactory, settings: Settings, inbox: SqlInbox) -> EdgeClient:
    return await make_client(settings, inbox)


@pytest.fixture
def stored_rows(session_factory: SessionFactory) -> Rows:
    """Read back every row of ``inbox_events``, oldest first."""

    async def read() -> list[InboxEvent]:
        async with session_factory() as session:
            return list((await session.exec(select(InboxEvent).order_by(col(InboxEvent.id)))).all())

    return read


@pytest.fixture
def edge_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="bot.edge.callback")
    yield caplog


@pytest.fixture(autouse=True)
def _edge_never_hides_a_bug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The edge answers 400/503 on an unexpected exception; a test must still fail when that happens."""
    caplog.set_level(logging.INFO, logger="bot.edge.callback")
    yield
    internal = [r for r in caplog.records if getattr(r, "reason", None) == "internal_error"]
    assert not internal, f"the edge hit an unexpected exception: {internal[0].getMessage()}"


def refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """Every refusal line the edge logged, as {reason, status, message}."""
    return [
        {"reason": r.reason, "status": r.status, "message": r.getMessage()}
        for r in caplog.records
        if r.name == "bot.edge.callback" and hasattr(r, "reason") and hasattr(r, "status")
    ]


@pytest.fixture
def signer() -> CallbackSigner:
    return CallbackSigner()


def callback_count(outcome: str, method: str = "POST") -> float:
    """Current value of ``lianyi_callbacks_total`` for one method/outcome."""
    return REGISTRY.get_sample_value("lianyi_callbacks_total", {"method": method, "outcome": outcome}) or 0.0


async def assert_refused(
    client: EdgeClient,
    method: str,
    caplog: pytest.LogCaptureFixture,
    stored_rows: Rows,
    *,
    status: int,
    reason: str,
    query: dict[str, str] | None = None,
    body: str | bytes = b"",
) -> None:
    """Send the request; it must get ``status`` with an empty body, one refusal log line, no stored row."""
    label = method if method in ("GET", "POST") else "other"
    before = callback_count(reason, label)
    resp = await client.request(method, PATH, params=query or {}, data=body)
    assert resp.status == status
    assert await resp.read() == b""
    assert [(r["reason"], r["status"]) for r in refusals(caplog)] == [(reason, status)]
    assert await stored_rows() == []
    assert callback_count(reason, label) == before + 1
