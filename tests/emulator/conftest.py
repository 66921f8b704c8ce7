"""Fixtures for the emulator's own tests: a small corp on a manual clock, served on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.emulator.clock import ManualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from tests.conftest import TEST_CORP_ID

SECRET = "test-secret"
AGENT_ID = 1000002
NO_CONTACT_SECRET = "hr-app-secret"


def make_state(clock: ManualClock | None = None) -> EmulatorState:
    state = EmulatorState(TEST_CORP_ID, clock=clock or ManualClock(), seed=7)
    state.add_app(SECRET, AGENT_ID)
    state.add_app(NO_CONTACT_SECRET, 1000003, contact_api=False)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("zhangwei", "张伟", "BJ001")
    state.add_staff("wangfang", "王芳", "BJ001")
    state.add_staff("kefu", "客服", "BJ001", has_contact_permission=False)
    state.put_tag_group("意向车型", ["轿车", "SUV"], order=2)
    return state


class Api:
    """Calls the emulator like a WeCom client would (token in the query string, JSON bodies)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, secret: str = SECRET) -> None:
        self.http = http
        self.base_url = base_url
        self.secret = secret
        self.token = ""

    async def raw(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None) -> Any:
        url = f"{self.base_url}/cgi-bin/{path}"
        async with self.http.request(method, url, params=params or {}, json=body) as response:
            assert response.status == 200
            return await response.json()

    async def gettoken(self, secret: str | None = None, corp_id: str = TEST_CORP_ID) -> dict[str, Any]:
        result: dict[str, Any] = await self.raw(
            "GET", "gettoken", params={"corpid": corp_id, "corpsecret": secret or self.secret}
        )
        return result

    async def call(self, path: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
        """POST ``body`` (or GET ``query`` when no body) with a valid token, fetched once."""
        if not self.token:
            got = await self.gettoken()
            assert got["errcode"] == 0, got
            self.token = got["access_token"]
        params = {"access_token": self.token, **query}
        result: dict[str, Any] = await self.raw("GET" if body is None else "POST", path, params=params, body=body)
        return result


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> EmulatorState:
    return make_state(clock)


@pytest.fixture
async def emulator(state: EmulatorState) -> AsyncIterator[RunningEmulator]:
    async with await start_emulator(state) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(http: aiohttp.ClientSession, emulator: RunningEmulator) -> Api:
    return Api(http, emulator.base_url)
