"""``lianyi emulator`` end to end: a real process plays a scenario against a callback URL."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from wechatpy.work.crypto import WeChatCrypto

from bot.edge.events import ContactAdded, parse_event
from bot.edge.xmlparse import parse_xml_fields
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN

SCENARIO = """
corp: {corp_id: ww0000000000000001, name: 测试汽车}
apps: [{secret: scenario-secret, agent_id: 1000002}]
seed: 3
dealers:
  - code: BJ001
    name: 北京朝阳4S店
    staff: [{userid: zhangwei, name: 张伟}, {userid: wangfang, name: 王芳}]
tag_groups: [{name: 意向车型, tags: [SUV, 轿车]}]
script:
  - {phase: add_customers, count: 6, tag_ratio: 0.5}
  - {phase: groups, count: 2, joins: [1, 2]}
"""
LIANYI = str(Path(sys.executable).with_name("lianyi"))


@pytest.fixture
async def callback_url() -> AsyncIterator[tuple[str, list[str]]]:
    crypto = WeChatCrypto(TEST_TOKEN, TEST_AES_KEY, TEST_CORP_ID)
    received: list[str] = []

    async def post(request: web.Request) -> web.Response:
        q = request.query
        received.append(crypto.decrypt_message(await request.text(), q["msg_signature"], q["timestamp"], q["nonce"]))
        return web.Response(text="")

    async def get(request: web.Request) -> web.Response:
        q = request.query
        return web.Response(text=crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"]))

    app = web.Application()
    app.router.add_post("/wecom/callback", post)
    app.router.add_get("/wecom/callback", get)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/wecom/callback", received
    await runner.cleanup()


async def test_plays_the_script_against_the_callback_url(tmp_path: Path, callback_url: tuple[str, list[str]]) -> None:
    url, received = callback_url
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SCENARIO, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update(
        LIANYI_CORP_ID=TEST_CORP_ID,
        LIANYI_CALLBACK_TOKEN=TEST_TOKEN,
        LIANYI_CALLBACK_AES_KEY=TEST_AES_KEY,
        LIANYI_SECRET_KEY=TEST_SECRET_KEY,
        LIANYI_APP_SECRET="settings-secret",
        LIANYI_AGENT_ID="1000002",
        LIANYI_LOG_JSON="false",
    )
    args = ["emulator", "--scenario", str(scenario), "--port", "0", "--callback-url", url, "--exit"]
    proc = await asyncio.create_subprocess_exec(
        LIANYI, *args, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "回调地址校验（GET echostr）：通过" in text
    assert f"企业 ID {TEST_CORP_ID}" in text  # the settings' corp replaces the scenario's
    assert f"回调成功 {len(received)}，失败 0" in text
    events = [parse_event(parse_xml_fields(body)) for body in received]
    added = [e for e in events if isinstance(e, ContactAdded)]
    assert len(added) >= 6 and all(e.corp_id == TEST_CORP_ID for e in events)
    assert any(e.state.startswith("L1~") for e in added)
