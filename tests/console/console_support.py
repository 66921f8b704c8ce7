"""A console client for tests: the real edge application, a browser-like cookie jar, and the login form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import Role, Runtime
from bot.settings import Settings
from bot.web.auth import SESSION_COOKIE
from scrm.db import write_transaction
from scrm.models import Dealer, Staff
from scrm.rows import ensure_corp
from tests.conftest import TEST_CORP_ID
from tests.web_support import web_auth

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html
    return found.group(1)


@dataclass
class Console:
    client: TestClient[web.Request, web.Application]
    runtime: Runtime

    async def login_form(self) -> str:
        async with self.client.get("/console/login") as response:
            assert response.status == 200
            return csrf_of(await response.text())

    async def login(self, username: str, password: str, *, csrf: str | None = None) -> tuple[int, str, str]:
        """(status, Location, body) of a POST of the login form (fetched first unless ``csrf`` is given)."""
        token = csrf if csrf is not None else await self.login_form()
        form = {"username": username, "password": password, "csrf_token": token}
        async with self.client.post("/console/login", data=form, allow_redirects=False) as response:
            return response.status, response.headers.get("Location", ""), await response.text()

    async def home(self) -> tuple[int, str]:
        async with self.client.get("/console/", allow_redirects=False) as response:
            return response.status, await response.text()

    async def post(self, path: str, csrf: str) -> ClientResponse:
        async with self.client.post(path, data={"csrf_token": csrf}, allow_redirects=False) as response:
            await response.read()
            return response

    def runtime_auth_cookie(self, session_id: str) -> str:
        """The cookie value the app would set for ``session_id``."""
        return web_auth(self.runtime.settings, self.runtime.session_factory, self.runtime.now).cookie_value(session_id)

    def session_cookie(self) -> str:
        cookie = self.client.session.cookie_jar.filter_cookies(self.client.make_url("/")).get(SESSION_COOKIE)
        return cookie.value if cookie is not None else ""


@asynccontextmanager
async def console(settings: Settings) -> AsyncIterator[Console]:
    """The edge app of ``settings``: dealers BJ001 and SH001, staff m1 (manager, BJ001), a1 (advisor, BJ001)."""
    app = create_app(settings, frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        runtime = app[RUNTIME_KEY]
        async with write_transaction(runtime.session_factory) as session:
            await ensure_corp(session, TEST_CORP_ID)
            bj = Dealer(corp_id=TEST_CORP_ID, code="BJ001", name="北京一店")
            session.add_all([bj, Dealer(corp_id=TEST_CORP_ID, code="SH001", name="上海一店")])
            await session.flush()
            for userid, role in (("m1", "manager"), ("a1", "advisor")):
                session.add(Staff(corp_id=TEST_CORP_ID, userid=userid, name=userid, dealer_id=bj.id, role=role))
        yield Console(client, runtime)
