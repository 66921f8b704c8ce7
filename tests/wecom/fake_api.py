"""A small fake of the WeCom server API for client and dispatcher tests (the one allowed stand-in).

It speaks the documented JSON API over real HTTP: ``gettoken`` with expiring tokens (40001 bad secret,
41001/40014/42001 on calls), per-call scripted faults (an errcode, an HTTP status, or a stall), a random
``-1`` busy rate, the welcome code that works once (41051 after), WeCom's silent drop of app messages past
30 per member per minute, and call counts tests can await. Time comes from a :class:`FakeClock` shared
with the client, so tests jump over token lifetimes and 60 s blocks without sleeping.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import TEST_CORP_ID

SECRET = "test-secret"
EXT = "/cgi-bin/externalcontact"
MEMBER_MESSAGES_PER_MINUTE = 30  # what WeCom delivers; the rest is dropped without an error

# path -> HTTP method WeCom uses for it
ROUTES: dict[str, str] = {
    "/cgi-bin/user/get": "GET",
    f"{EXT}/get_follow_user_list": "GET",
    f"{EXT}/get": "GET",
    f"{EXT}/list": "GET",
    f"{EXT}/batch/get_by_user": "POST",
    f"{EXT}/remark": "POST",
    f"{EXT}/mark_tag": "POST",
    f"{EXT}/get_corp_tag_list": "POST",
    f"{EXT}/add_corp_tag": "POST",
    f"{EXT}/edit_corp_tag": "POST",
    f"{EXT}/del_corp_tag": "POST",
    f"{EXT}/groupchat/list": "POST",
    f"{EXT}/groupchat/get": "POST",
    f"{EXT}/send_welcome_msg": "POST",
    f"{EXT}/add_contact_way": "POST",
    "/cgi-bin/message/send": "POST",
}


class FakeClock:
    """Epoch seconds that only move when told to; ``sleep`` moves them instead of waiting."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass(frozen=True)
class HttpStatus:
    """Scripted fault: answer with this HTTP status and no JSON."""

    status: int


@dataclass(frozen=True)
class Stall:
    """Scripted fault: never answer (until the fake shuts down), so the client times out."""


Fault = int | HttpStatus | Stall


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: dict[str, Any]
    at: float
    errcode: int | None  # what we answered (None = HTTP fault)


@dataclass
class FakeWeCom:
    clock: FakeClock
    corp_id: str = TEST_CORP_ID
    secret: str = SECRET
    token_ttl: int = 7200
    busy_rate: float = 0.0  # share of API calls answered with -1 (without side effects)
    follow_page_size: int = 2  # follow_user entries per externalcontact/get page
    rng: random.Random = field(default_factory=lambda: random.Random(8))
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires at
    scripted: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[Request] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    welcome_sends: Counter[str] = field(default_factory=Counter)  # accepted sends per welcome code
    marks: Counter[tuple[str, str]] = field(default_factory=Counter)  # accepted mark_tag per relation
    delivered: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    dropped: Counter[str] = field(default_factory=Counter)  # messages WeCom swallowed per member
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    tag_groups: list[dict[str, Any]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _shutdown: asyncio.Event = field(default_factory=asyncio.Event)

    # --- test controls ---------------------------------------------------------------------------------

    def script(self, path: str, *faults: Fault) -> None:
        """The next calls of ``path`` get these faults, in order, before any normal answer."""
        self.scripted[path].extend(faults)

    def invalidate_tokens(self) -> None:
        """WeCom revoking every token early (the next calls get 40014)."""
        self.tokens.clear()

    def expire_tokens(self) -> None:
        """Every token expires now, before its advertised lifetime (the next calls get 42001)."""
        for token in self.tokens:
            self.tokens[token] = self.clock.now()

    def ok_calls(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path and r.errcode == 0)

    async def wait_for_calls(self, path: str, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.calls[path] >= count)

    # --- HTTP -------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        method = ROUTES.get(path, "GET" if path == "/cgi-bin/gettoken" else "")
        if not method:
            raise web.HTTPNotFound()
        if request.method != method:
            raise web.HTTPMethodNotAllowed(request.method, [method])
        body: dict[str, Any] = await request.json() if request.method == "POST" and request.can_read_body else {}
        params = dict(request.query)
        self.calls[path] += 1
        async with self._changed:
            self._changed.notify_all()
        queue = self.scripted[path]
        if queue and isinstance(queue[0], Stall):
            queue.popleft()
            await self._shutdown.wait()
            raise web.HTTPServiceUnavailable()
        if queue and isinstance(queue[0], HttpStatus):
            status = queue.popleft()
            assert isinstance(status, HttpStatus)
            self._record(request.method, path, params, body, None)
            return web.Response(status=status.status, text="fault")
        answer = self._answer(path, params, body)
        self._record(request.method, path, params, body, int(answer.get("errcode", 0)))
        return web.json_response(answer)

    def _record(
        self, method: str, path: str, params: dict[str, str], body: dict[str, Any], errcode: int | None
    ) -> None:
        self.requests.append(Request(method, path, params, body, self.clock.now(), errcode))

    def _scripted_errcode(self, path: str) -> int | None:
        queue = self.scripted[path]
        fault = queue.popleft() if queue else None
        assert fault is None or isinstance(fault, int)
        return fault

    def _answer(self, path: str, params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if path == "/cgi-bin/gettoken":
            return self._gettoken(params, self._scripted_errcode(path))
        token = params.get("access_token")
        if not token:
            return _error(41001, "access_token missing")
        if token not in self.tokens:
            return _error(40014, "invalid access_token")
        if self.clock.now() >= self.tokens[token]:
            return _error(42001, "access_token expired")
        fault = self._scripted_errcode(path)  # scripted errcodes answer calls that pass the token check
        if fault is not None:
            return _error(fault, "scripted fault")
        if self.busy_rate and self.rng.random() < self.busy_rate:
            return _error(-1, "system busy")
        handler = _HANDLERS.get(path)
        return handler(self, params, body) if handler else _ok()

    def _gettoken(self, params: dict[str, str], fault: int | None) -> dict[str, Any]:
        if fault is not None:
            return _error(fault, "scripted fault")
        if params.get("corpid") != self.corp_id:
            return _error(40013, "invalid corpid")
        if params.get("corpsecret") != self.secret:
            return _error(40001, "invalid credential")
        token = uuid.uuid4().hex
        self.tokens[token] = self.clock.now() + self.token_ttl
        return {**_ok(), "access_token": token, "expires_in": self.token_ttl}

    # --- API behaviour ----------------------------------------------------------------------------------

    def _send_welcome(self, _params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        code = str(body.get("welcome_code", ""))
        if not code:
            return _error(41050, "invalid welcome_code")
        if self.welcome_sends[code]:
            return _error(41051, "welcome_code already used")
        self.welcome_sends[code] += 1
        return _ok()

    def _mark_tag(self, _params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.marks[(str(body["userid"]), str(body["external_userid"]))] += 1
        return _ok()

    def _message_send(self, _params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        for member in str(body.get("touser", "")).split("|"):
            recent = [t for t in self.delivered[member] if t > now - 60]
            if len(recent) >= MEMBER_MESSAGES_PER_MINUTE:
                self.dropped[member] += 1  # WeCom answers ok and drops it
            else:
                self.delivered[member].append(now)
        return {**_ok(), "invaliduser": "", "msgid": uuid.uuid4().hex}

    def _contact(self, params: dict[str, str], _body: dict[str, Any]) -> dict[str, Any]:
        contact = self.contacts.get(params.get("external_userid", ""))
        if contact is None:
            return _error(84061, "no customer relationship")
        start = int(params.get("cursor") or 0)
        follow = contact["follow_user"]
        end = start + self.follow_page_size
        page: dict[str, Any] = {
            **_ok(),
            "external_contact": contact["external_contact"],
            "follow_user": follow[start:end],
        }
        if end < len(follow):
            page["next_cursor"] = str(end)
        return page

    def _group(self, _params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        group = self.groups.get(str(body.get("chat_id", "")))
        if group is None:
            return _error(40058, "invalid chat_id")
        return {**_ok(), "group_chat": group}

    def _tags(self, _params: dict[str, str], _body: dict[str, Any]) -> dict[str, Any]:
        return {**_ok(), "tag_group": self.tag_groups}


_HANDLERS: dict[str, Callable[[FakeWeCom, dict[str, str], dict[str, Any]], dict[str, Any]]] = {
    f"{EXT}/send_welcome_msg": FakeWeCom._send_welcome,
    f"{EXT}/mark_tag": FakeWeCom._mark_tag,
    "/cgi-bin/message/send": FakeWeCom._message_send,
    f"{EXT}/get": FakeWeCom._contact,
    f"{EXT}/groupchat/get": FakeWeCom._group,
    f"{EXT}/get_corp_tag_list": FakeWeCom._tags,
}


def _ok() -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok"}


def _error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


@dataclass
class RunningFake:
    state: FakeWeCom
    base_url: str


def make_app(state: FakeWeCom) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    return app


# --- fixtures (imported by the conftest of tests/wecom and tests/outbox) ---------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake_wecom(clock: FakeClock) -> AsyncIterator[RunningFake]:
    state = FakeWeCom(clock=clock)
    server = TestServer(make_app(state), host="127.0.0.1")
    await server.start_server()
    try:
        yield RunningFake(state, str(server.make_url("")).rstrip("/"))
    finally:
        state._shutdown.set()
        await server.close()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
