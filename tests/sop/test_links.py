"""Tracked links: signing, the click route over real HTTP, and last_active_at on both databases."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.web.links import add_link_routes
from scrm.db import SessionFactory, make_engine, make_session_factory, transaction
from scrm.links import MAX_TOKEN_CHARS, LinkError, LinkSigner, TrackedLink, record_click
from scrm.models import AuditLog, Contact, Corp

CORP = "wwlinkcorp"
EXT = "wmLinkCustomer001"
BASE = "https://scrm.example.com"
PAGE = "https://www.example.com/cars/model-x?from=sop&lang=zh"
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

SIGNER = LinkSigner(b"link-secret-for-tests", BASE)
LinkClient = TestClient[web.Request, web.Application]


def wrap(url: str = PAGE, signer: LinkSigner = SIGNER, ext: str = EXT) -> str:
    return signer.wrap(url, corp_id=CORP, external_userid=ext, source="sop:nurture:2")


def token_of(link: str) -> str:
    assert link.startswith(f"{BASE}/l/")
    return link.removeprefix(f"{BASE}/l/")


def test_round_trip() -> None:
    link = wrap()
    assert "model-x" not in link  # the url travels inside the token, not in the clear
    assert SIGNER.unwrap(token_of(link)) == TrackedLink(PAGE, CORP, EXT, "sop:nurture:2")


def test_unicode_and_trailing_slash_base() -> None:
    signer = LinkSigner(b"k", BASE + "/")
    url = "https://example.com/活动?城市=北京"
    link = signer.wrap(url, corp_id=CORP, external_userid="客户", source="campaign:春节")
    assert signer.unwrap(token_of(link)).url == url


@pytest.mark.parametrize("url", ["weixin://dl/business", "mailto:a@b.cn", "/relative/path", "https:///no-host", ""])
def test_non_http_urls_are_untouched(url: str) -> None:
    assert wrap(url) == url


def test_overlong_url_is_sent_untracked() -> None:
    url = "https://example.com/?q=" + "x" * MAX_TOKEN_CHARS
    assert wrap(url) == url


def flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "signature"])
def test_tampered_token(where: str) -> None:
    token = token_of(wrap())
    payload, signature = token.split(".")
    tampered = f"{flip(payload, 5)}.{signature}" if where == "payload" else f"{payload}.{flip(signature, 3)}"
    with pytest.raises(LinkError, match="bad signature"):
        SIGNER.unwrap(tampered)


def test_other_customer_cannot_be_swapped_in() -> None:
    mine, theirs = token_of(wrap()), token_of(wrap(ext="wmSomeoneElse"))
    forged = f"{theirs.split('.')[0]}.{mine.split('.')[1]}"
    with pytest.raises(LinkError, match="bad signature"):
        SIGNER.unwrap(forged)


def test_foreign_secret() -> None:
    foreign = LinkSigner(b"another-deployment", BASE)
    with pytest.raises(LinkError, match="bad signature"):
        SIGNER.unwrap(token_of(wrap(signer=foreign)))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("no-dot-here", "malformed token"),
        (".sig", "malformed token"),
        ("payload.", "malformed token"),
        ("payload.!!!", "malformed signature"),
        ("x" * (MAX_TOKEN_CHARS + 1), "token too long"),
        ("负载.签名", "malformed signature"),
    ],
)
def test_malformed_tokens(token: str, reason: str) -> None:
    with pytest.raises(LinkError, match=reason):
        SIGNER.unwrap(token)


def sign(payload: str, secret: bytes = b"link-secret-for-tests") -> str:
    """A correctly signed token around any payload (the documented format: b64url(mac[:16]))."""
    mac = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()[:16]
    return f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"u": "https://a.cn"}', b'{"u": 1, "c": "c", "e": "e", "s": "s"}']
)
def test_signed_garbage_is_refused(body: bytes) -> None:
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    with pytest.raises(LinkError, match="malformed payload"):
        SIGNER.unwrap(sign(payload))


def test_signed_javascript_is_refused() -> None:
    script = SIGNER.token("javascript:alert(1)", corp_id=CORP, external_userid=EXT, source="s")
    with pytest.raises(LinkError, match="not an http"):
        SIGNER.unwrap(script)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        LinkSigner(b"", BASE)


@pytest.fixture
async def seeded(session_factory: SessionFactory) -> SessionFactory:
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id=CORP))
        await s.flush()
        s.add(Contact(corp_id=CORP, external_userid=EXT, name="王先生"))
    return session_factory


async def last_active(factory: SessionFactory) -> datetime | None:
    async with factory() as s:
        contact = (await s.exec(select(Contact).where(Contact.external_userid == EXT))).one()
        return contact.last_active_at


async def clicks(factory: SessionFactory) -> list[AuditLog]:
    async with factory() as s:
        query = select(AuditLog).where(AuditLog.action == "link.clicked").order_by(col(AuditLog.id))
        return list((await s.exec(query)).all())


async def test_record_click_moves_last_active_only_forward(seeded: SessionFactory) -> None:
    link = SIGNER.unwrap(token_of(wrap()))
    for at in (T0, T0 - timedelta(hours=1), T0 + timedelta(days=2), T0 + timedelta(days=1)):
        async with transaction(seeded) as s:
            await record_click(s, link, at)
    assert await last_active(seeded) == T0 + timedelta(days=2)
    audit = await clicks(seeded)
    assert len(audit) == 4  # every click is audited, even a late-arriving older one
    assert (audit[0].corp_id, audit[0].subject_type, audit[0].subject_id) == (CORP, "contact", EXT)
    assert audit[0].detail == {"url": PAGE, "source": "sop:nurture:2", "at": T0.isoformat()}


Started = Callable[..., Awaitable[LinkClient]]


@pytest.fixture
async def start() -> AsyncIterator[Started]:
    clients: list[LinkClient] = []

    async def run(factory: SessionFactory, now: Callable[[], datetime]) -> LinkClient:
        app = web.Application()
        add_link_routes(app, SIGNER, factory, now, corp_id=CORP)
        client: LinkClient = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield run
    for client in clients:
        await client.close()


async def test_click_redirects_and_counts(seeded: SessionFactory, start: Started) -> None:
    clock = [T0]
    client = await start(seeded, lambda: clock[0])
    path = f"/l/{token_of(wrap())}"
    response = await client.get(path, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == PAGE
    assert await last_active(seeded) == T0

    clock[0] = T0 + timedelta(days=3)
    assert (await client.get(path, allow_redirects=False)).status == 302
    assert await last_active(seeded) == T0 + timedelta(days=3)
    assert len(await clicks(seeded)) == 2


async def test_head_redirects_without_counting(seeded: SessionFactory, start: Started) -> None:
    client = await start(seeded, lambda: T0)
    response = await client.head(f"/l/{token_of(wrap())}", allow_redirects=False)
    assert response.status == 302
    assert await last_active(seeded) is None
    assert await clicks(seeded) == []


@pytest.mark.parametrize("token", ["garbage", "a.b"])
async def test_invalid_link_page(seeded: SessionFactory, start: Started, token: str) -> None:
    client = await start(seeded, lambda: T0)
    response = await client.get(f"/l/{token}", allow_redirects=False)
    assert response.status == 404
    assert response.content_type == "text/html"
    assert "链接无效或已过期" in await response.text()
    assert await clicks(seeded) == []


async def test_foreign_token_is_not_redirected(seeded: SessionFactory, start: Started) -> None:
    client = await start(seeded, lambda: T0)
    foreign = LinkSigner(b"another-deployment", BASE)
    response = await client.get(f"/l/{token_of(wrap(signer=foreign))}", allow_redirects=False)
    assert response.status == 404
    assert "Location" not in response.headers


async def test_database_down_still_redirects(tmp_path: Path, start: Started, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'lianyi.db'}")
    try:
        client = await start(make_session_factory(engine), lambda: T0)
        with caplog.at_level(logging.ERROR, logger="bot.web.links"):
            response = await client.get(f"/l/{token_of(wrap())}", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == PAGE
        assert any("could not record" in r.getMessage() for r in caplog.records)
    finally:
        await engine.dispose()
