"""The callback driver: real encryption and signatures, WeCom's 5 s answer window and three attempts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from wechatpy.work.crypto import WeChatCrypto

from bot.edge.events import GroupUpdated, parse_event
from bot.edge.xmlparse import parse_xml_fields
from bot.emulator.callbacks import CallbackDriver, render_xml
from bot.emulator.state import EmulatorState
from bot.settings import Settings
from tests.conftest import make_settings

Behaviour = Callable[[int], Awaitable[web.Response]]


@dataclass
class Receiver:
    """A callback URL under test control: ``behaviour(attempt)`` decides each answer."""

    settings: Settings
    behaviour: Behaviour
    bodies: list[str] = field(default_factory=list)
    attempts: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def decrypt(self, request: web.Request, body: str) -> str:
        crypto = WeChatCrypto(self.settings.callback_token, self.settings.callback_aes_key, self.settings.corp_id)
        q = request.query
        return str(crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"]))

    async def post(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.bodies.append(self.decrypt(request, await request.text()))
        return await self.behaviour(self.attempts)

    async def get(self, request: web.Request) -> web.Response:
        crypto = WeChatCrypto(self.settings.callback_token, self.settings.callback_aes_key, self.settings.corp_id)
        q = request.query
        return web.Response(
            text=str(crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"]))
        )


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Callable[[Behaviour], Awaitable[tuple[Receiver, str]]]]:
    runners: list[web.AppRunner] = []
    receivers: list[Receiver] = []

    async def start(behaviour: Behaviour) -> tuple[Receiver, str]:
        receiver = Receiver(settings, behaviour)
        app = web.Application()
        app.router.add_post("/wecom/callback", receiver.post)
        app.router.add_get("/wecom/callback", receiver.get)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        receivers.append(receiver)
        port = runner.addresses[0][1]
        return receiver, f"http://127.0.0.1:{port}/wecom/callback"

    yield start
    for receiver in receivers:
        receiver.release.set()
    for runner in runners:
        await runner.cleanup()


def _driver(settings: Settings, url: str, http: aiohttp.ClientSession, **kw: Any) -> CallbackDriver:
    return CallbackDriver(url, settings.callback_token, settings.callback_aes_key, settings.corp_id, http=http, **kw)


async def test_encrypted_callback_decrypts_with_wechatpy_and_parses(
    serve: Callable[[Behaviour], Awaitable[tuple[Receiver, str]]],
    settings: Settings,
    state: EmulatorState,
    http: aiohttp.ClientSession,
) -> None:
    async def ok(_: int) -> web.Response:
        return web.Response(text="")

    receiver, url = await serve(ok)
    chat = state.create_group("zhangwei", "北京车主群")["ChatId"]
    fields = state.join_group(chat, ["wmA", "wmB"], 3)
    result = await _driver(settings, url, http).send(fields)
    assert (result.ok, result.attempts, result.status) == (True, 1, 200)
    plain = receiver.bodies[0]
    assert "<MemChangeList><Item><![CDATA[wmA]]></Item><Item><![CDATA[wmB]]></Item></MemChangeList>" in plain
    event = parse_event(parse_xml_fields(plain))
    assert isinstance(event, GroupUpdated)
    assert event.corp_id == settings.corp_id and event.chat_id == chat
    assert event.mem_change_list == ("wmA", "wmB") and event.join_scene == 3
    assert event.cur_mem_ver == state.groups[chat].member_version != event.last_mem_ver


async def test_retries_on_500_until_200(
    serve: Callable[[Behaviour], Awaitable[tuple[Receiver, str]]],
    settings: Settings,
    state: EmulatorState,
    http: aiohttp.ClientSession,
) -> None:
    async def flaky(attempt: int) -> web.Response:
        return web.Response(status=500 if attempt < 3 else 200)

    receiver, url = await serve(flaky)
    driver = _driver(settings, url, http)
    result = await driver.send(state.add_contact("zhangwei", name="李雷", state="L1~q~BJ001"))
    assert (result.ok, result.attempts, result.status) == (True, 3, 200)
    assert len(set(receiver.bodies)) == 1  # a retry is the same message
    assert len(driver.latencies) == 3


async def test_gives_up_after_three_failures(
    serve: Callable[[Behaviour], Awaitable[tuple[Receiver, str]]],
    settings: Settings,
    state: EmulatorState,
    http: aiohttp.ClientSession,
) -> None:
    async def broken(_: int) -> web.Response:
        return web.Response(status=503)

    receiver, url = await serve(broken)
    result = await _driver(settings, url, http).send(state.add_contact("zhangwei", name="韩梅梅"))
    assert (result.ok, result.attempts, result.status) == (False, 3, 503)
    assert receiver.attempts == 3


async def test_slow_handler_times_out_and_is_retried(
    serve: Callable[[Behaviour], Awaitable[tuple[Receiver, str]]],
    settings: Settings,
    state: EmulatorState,
    http: aiohttp.ClientSession,
) -> None:
    receiver: Receiver | None = None

    async def slow(attempt: int) -> web.Response:
        assert receiver is not None
        if attempt < 3:
            await receiver.release.wait()  # never answers in time
        return web.Response(text="")

    receiver, url = await serve(slow)
    result = await _driver(settings, url, http, timeout=0.2).send(state.add_contact("zhangwei", name="王五"))
    assert (result.ok, result.attempts, result.status) == (True, 3, 200)
    assert result.latencies[0] >= 0.2


async def test_verify_url(
    serve: Callable[[Behaviour], Awaitable[tuple[Receiver, str]]], settings: Settings, http: aiohttp.ClientSession
) -> None:
    async def ok(_: int) -> web.Response:
        return web.Response(text="")

    _, url = await serve(ok)
    assert await _driver(settings, url, http).verify_url("1616140317555161061")


def test_render_xml_shapes() -> None:
    xml = render_xml({"ToUserName": "ww1", "CreateTime": 17, "MemChangeList": ["a"], "Name": "x]]>y"})
    assert xml == (
        "<xml><ToUserName><![CDATA[ww1]]></ToUserName><CreateTime>17</CreateTime>"
        "<MemChangeList><Item><![CDATA[a]]></Item></MemChangeList>"
        "<Name><![CDATA[x]]]]><![CDATA[>y]]></Name></xml>"
    )
    assert parse_xml_fields(xml)["Name"] == "x]]>y"
    assert parse_xml_fields(xml)["MemChangeList"] == ["a"]
