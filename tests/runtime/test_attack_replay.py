"""Issue 13, attack 1, replayed against the real application: whoever knows the callback AES key (typed into the
WeCom admin console by whoever set up the callback) could mint an operator's staff token and a tracked link that
redirects anywhere, tokens lived for 10 years, and none could be revoked. Each is refused now (401 / 404), and
what is made with the secret key (and, during a rotation, the previous one) still works: the control that makes
every refusal here able to fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import Role, Runtime
from bot.settings import Settings, key_ring
from bot.web.links import link_signer
from scrm.db import write_transaction
from scrm.db_types import utcnow
from scrm.keys import KeyPurpose, derive_key
from scrm.leads.staff_tokens import TokenRefused, _signature, revoke_token
from scrm.links import LinkSigner
from scrm.models import ApiToken, AuditLog, Contact, Staff
from scrm.rows import ensure_corp
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, make_settings
from tests.web_support import mint

PUBLIC = "https://scrm.example.com"
EVIL = "https://evil.example.net/phish"
NEW_KEY = "rotated-secret-key-0123456789-ABCDEFGHIJKLMNOPQRSTUV"
Client = TestClient[web.Request, web.Application]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def old_link_key(aes_key: str) -> bytes:
    """How the tracked-link key was made before issue 13: from the callback AES key."""
    return hashlib.sha256(b"lianyi tracked links\0" + aes_key.encode("ascii")).digest()


def old_staff_token(aes_key: str, corp_id: str, userid: str, expires: datetime) -> str:
    """A staff token as the old ``lianyi staff token`` made it: ``userid.expiry.signature`` under a key derived
    from the link key, hence from the AES key."""
    key = hmac.new(old_link_key(aes_key), b"staff tokens", hashlib.sha256).digest()
    expiry = int(expires.timestamp())
    signature = hmac.new(key, f"{corp_id}\0{userid}\0{expiry}".encode(), hashlib.sha256).digest()
    return f"{userid}.{expiry}.{_b64(signature)}"


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Client, Runtime]]:
    """The edge app of ``settings`` with operator ``op`` and customer ``wmC`` in the database."""
    app = create_app(settings, frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        runtime = app[RUNTIME_KEY]
        async with write_transaction(runtime.session_factory) as session:
            await ensure_corp(session, TEST_CORP_ID)
            if await session.get(Staff, 1) is None:
                session.add(Staff(corp_id=TEST_CORP_ID, userid="op", name="运营", role="operator", active=True))
                session.add(Contact(corp_id=TEST_CORP_ID, external_userid="wmC"))
        yield client, runtime


async def _leads_status(client: Client, token: str) -> int:
    async with client.get("/api/leads", headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status


async def _link_status(client: Client, signer: LinkSigner) -> tuple[int, str | None]:
    path = signer.wrap(EVIL, corp_id=TEST_CORP_ID, external_userid="wmC", source="sop:x").removeprefix(PUBLIC)
    async with client.get(path, allow_redirects=False) as response:
        return response.status, response.headers.get("Location")


async def test_a_staff_token_minted_from_the_aes_key_is_refused(database_url: str) -> None:
    settings = make_settings(database_url=database_url, public_url=PUBLIC)
    async with serving(settings) as (client, runtime):
        expires = utcnow() + timedelta(days=3650)
        assert await _leads_status(client, old_staff_token(TEST_AES_KEY, TEST_CORP_ID, "op", expires)) == 401
        genuine = await mint(settings, runtime.session_factory, "op", now=utcnow())
        # a real token's id and expiry (its row exists) signed with a key derived from the AES key: refused too
        _, token_id, expiry, _ = genuine.token.split(".")
        aes_key = derive_key(TEST_AES_KEY, KeyPurpose.STAFF_TOKENS)
        forged = f"lt1.{token_id}.{expiry}.{_signature(aes_key, TEST_CORP_ID, token_id, int(expiry))}"
        assert await _leads_status(client, forged) == 401
        assert await _leads_status(client, genuine.token) == 200


async def test_a_tracked_link_signed_with_the_aes_key_is_a_404_and_records_nothing(database_url: str) -> None:
    settings = make_settings(database_url=database_url, public_url=PUBLIC)
    async with serving(settings) as (client, runtime):
        assert await _link_status(client, LinkSigner(old_link_key(TEST_AES_KEY), PUBLIC)) == (404, None)
        aes_derived = LinkSigner(derive_key(TEST_AES_KEY, KeyPurpose.TRACKED_LINKS), PUBLIC)
        assert await _link_status(client, aes_derived) == (404, None)
        async with runtime.session_factory() as session:
            assert (await session.exec(select(AuditLog).where(AuditLog.action == "link.clicked"))).all() == []
        genuine = link_signer(settings)
        assert genuine is not None
        assert await _link_status(client, genuine) == (302, EVIL)


async def test_a_ten_year_token_is_refused_at_issue_and_at_verify(database_url: str) -> None:
    settings = make_settings(database_url=database_url)
    async with serving(settings) as (client, runtime):
        now = utcnow()
        with pytest.raises(TokenRefused):
            await mint(settings, runtime.session_factory, "op", now=now, lifetime=timedelta(days=3650))
        # a row and a signature with the real key but a 10-year expiry (as an old or tampered row would be)
        key = key_ring(settings).key(KeyPurpose.STAFF_TOKENS)
        expiry = int((now + timedelta(days=3650)).timestamp())
        async with write_transaction(runtime.session_factory) as session:
            session.add(
                ApiToken(
                    id="tenyears",
                    corp_id=TEST_CORP_ID,
                    staff_userid="op",
                    created_by="x",
                    expires_at=datetime.fromtimestamp(expiry, UTC),
                )
            )
        ten_years = f"lt1.tenyears.{expiry}.{_signature(key, TEST_CORP_ID, 'tenyears', expiry)}"
        assert await _leads_status(client, ten_years) == 401
        thirty_days = await mint(settings, runtime.session_factory, "op", now=now, lifetime=timedelta(days=30))
        assert await _leads_status(client, thirty_days.token) == 200


async def test_a_revoked_token_is_refused(database_url: str) -> None:
    settings = make_settings(database_url=database_url)
    async with serving(settings) as (client, runtime):
        issued = await mint(settings, runtime.session_factory, "op", now=utcnow())
        assert await _leads_status(client, issued.token) == 200
        async with write_transaction(runtime.session_factory) as session:
            assert await revoke_token(session, issued.token_id, utcnow()) is not None
        assert await _leads_status(client, issued.token) == 401


async def test_during_a_rotation_the_previous_key_still_verifies(database_url: str) -> None:
    before = make_settings(database_url=database_url, public_url=PUBLIC)
    old_signer = link_signer(before)
    assert old_signer is not None
    async with serving(before) as (_, runtime):
        old_token = await mint(before, runtime.session_factory, "op", now=utcnow())
    rotating = make_settings(
        database_url=database_url, public_url=PUBLIC, secret_key=NEW_KEY, secret_key_previous=TEST_SECRET_KEY
    )
    async with serving(rotating) as (client, runtime):
        assert await _leads_status(client, old_token.token) == 200
        assert await _link_status(client, old_signer) == (302, EVIL)
        new_token = await mint(rotating, runtime.session_factory, "op", now=utcnow())
        assert key_ring(rotating).key(KeyPurpose.STAFF_TOKENS) != key_ring(before).key(KeyPurpose.STAFF_TOKENS)
        assert await _leads_status(client, new_token.token) == 200
    rotated = make_settings(database_url=database_url, public_url=PUBLIC, secret_key=NEW_KEY)
    async with serving(rotated) as (client, _):
        assert await _leads_status(client, old_token.token) == 401
        assert await _link_status(client, old_signer) == (404, None)
        assert await _leads_status(client, new_token.token) == 200
