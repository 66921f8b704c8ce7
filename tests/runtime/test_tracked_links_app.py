"""Tracked links through the real application: with LIANYI_PUBLIC_URL set, /l/<token> counts the click on the
contact and redirects; without it the route does not exist and links are sent as written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import Role, Runtime
from bot.web.links import link_signer
from scrm.db import write_transaction
from scrm.models import AuditLog, Contact, IntentSignal, Message
from scrm.rows import ensure_corp
from tests.conftest import TEST_CORP_ID, create_sqlite_database, make_settings

LinkClient = TestClient[web.Request, web.Application]


@asynccontextmanager
async def serving_link(tmp_path: Path, corp_id: str, ext: str) -> AsyncIterator[tuple[LinkClient, Runtime, str]]:
    """The app (corp TEST_CORP_ID) with ``ext`` a contact of ``corp_id``, and the path of a link sent to them."""
    url = await create_sqlite_database(tmp_path / "links.db")
    settings = make_settings(database_url=url, public_url="https://scrm.example.com")
    signer = link_signer(settings)
    assert signer is not None
    app = create_app(settings, frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        runtime = app[RUNTIME_KEY]
        async with write_transaction(runtime.session_factory) as session:
            await ensure_corp(session, corp_id)
            session.add(Contact(corp_id=corp_id, external_userid=ext))
        tracked = signer.wrap("https://m.example.com/book", corp_id=corp_id, external_userid=ext, source="sop:x")
        assert tracked.startswith("https://scrm.example.com/l/")
        yield client, runtime, tracked.removeprefix("https://scrm.example.com")


async def test_a_click_on_a_tracked_link_marks_the_contact_active(tmp_path: Path) -> None:
    async with serving_link(tmp_path, TEST_CORP_ID, "wmLINK") as (client, runtime, path):
        before = datetime.now(UTC)
        response = await client.get(path, allow_redirects=False)
        assert response.status == 302 and response.headers["Location"] == "https://m.example.com/book"
        forged = await client.get(path[:-2] + "xx", allow_redirects=False)
        assert forged.status == 404 and "链接无效" in await forged.text()
        async with runtime.session_factory() as session:
            contact = (await session.exec(select(Contact).where(Contact.external_userid == "wmLINK"))).one()
        assert contact.last_active_at is not None and contact.last_active_at >= before
        async with runtime.session_factory() as session:
            signals = (await session.exec(select(IntentSignal).where(IntentSignal.kind == "click"))).all()
        assert [(s.external_userid, s.detail) for s in signals] == [
            ("wmLINK", {"url": "https://m.example.com/book", "source": "sop:x"})
        ]


async def test_a_link_of_another_corp_is_refused(tmp_path: Path) -> None:
    async with serving_link(tmp_path, "wwanothercorp", "wmTHEIRS") as (client, runtime, path):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 404 and "链接无效" in await response.text()
        assert "Location" not in response.headers
        async with runtime.session_factory() as session:
            contact = (await session.exec(select(Contact).where(Contact.external_userid == "wmTHEIRS"))).one()
            assert contact.last_active_at is None
            assert (await session.exec(select(IntentSignal))).all() == []
            assert (await session.exec(select(AuditLog).where(AuditLog.action == "link.clicked"))).all() == []


async def test_without_a_public_url_there_is_no_link_route(tmp_path: Path) -> None:
    url = await create_sqlite_database(tmp_path / "nolinks.db")
    settings = make_settings(database_url=url)
    assert link_signer(settings) is None
    async with TestClient(TestServer(create_app(settings, frozenset({Role.EDGE})))) as client:
        response = await client.get("/l/anything.sig", allow_redirects=False)
        assert response.status == 404


async def test_the_app_mounts_ingest_and_scores_what_it_receives(tmp_path: Path) -> None:
    url = await create_sqlite_database(tmp_path / "ingest.db")
    token = "t" * 32
    settings = make_settings(database_url=url, ingest_token=token, public_url="https://scrm.example.com")
    app = create_app(settings, frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        runtime = app[RUNTIME_KEY]
        async with write_transaction(runtime.session_factory) as session:
            await ensure_corp(session, TEST_CORP_ID)
            session.add(Contact(corp_id=TEST_CORP_ID, external_userid="wmIN"))
        record = {
            "msgid": "a1",
            "sent_at": "2026-11-20T10:00:00+08:00",
            "external_userid": "wmIN",
            "text": "落地价多少钱",
        }
        refused = await client.post("/ingest/messages", json=[record])
        assert refused.status == 401
        accepted = await client.post("/ingest/messages", json=[record], headers={"Authorization": f"Bearer {token}"})
        assert accepted.status == 200 and (await accepted.json())["stored"] == 1
        signer = link_signer(settings)
        assert signer is not None
        tracked = signer.wrap("https://m.example.com/a", corp_id=TEST_CORP_ID, external_userid="wmIN", source="c:1")
        token_part = tracked.rsplit("/", 1)[1]
        redirected = await client.get(f"/r/{token_part}", allow_redirects=False)
        assert redirected.status == 302
        async with runtime.session_factory() as session:
            message = (await session.exec(select(Message).where(Message.msgid == "a1"))).one()
            kinds = sorted(s.kind for s in (await session.exec(select(IntentSignal))).all())
        assert message.primary_intent == "price" and message.classified_at is not None
        assert kinds == ["click", "message"]
