"""The emulated AI bot (智能机器人): the JSON messages WeCom posts when a user @-mentions the bot, encrypted
and signed as WeCom does (receive id ``""``, body ``{"encrypt": …}``)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bot.edge.crypto import CallbackCrypto


def aibot_text_message(
    *, aibotid: str, userid: str, text: str, chatid: str = "", msgid: str | None = None
) -> dict[str, Any]:
    """A text message to the bot: in a group (``chatid`` given, the text starts with the @-mention) or 1:1."""
    message: dict[str, Any] = {
        "msgid": msgid or secrets.token_hex(16),
        "aibotid": aibotid,
        "chattype": "group" if chatid else "single",
        "from": {"userid": userid},
        "response_url": f"https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code={secrets.token_hex(8)}",
        "msgtype": "text",
        "text": {"content": text},
    }
    if chatid:
        message["chatid"] = chatid
    return message


class AiBotSender:
    """Posts AI bot callbacks to one URL (the Lianyi endpoint under test)."""

    def __init__(
        self,
        url: str,
        token: str,
        aes_key: str,
        *,
        http: aiohttp.ClientSession,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._crypto = CallbackCrypto(token, aes_key, "")
        self._http = http
        self._now = now

    def build(self, message: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
        """The query string and JSON body of one encrypted, signed AI bot callback."""
        timestamp = str(int(self._now()))
        nonce = str(secrets.randbelow(10**10))
        plaintext = json.dumps(dict(message), ensure_ascii=False)
        encrypt_b64, signature = self._crypto.encrypt(plaintext, nonce=nonce, timestamp=timestamp)
        params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}
        return params, json.dumps({"encrypt": encrypt_b64}).encode()

    async def post(self, params: Mapping[str, str], body: bytes) -> int:
        async with self._http.post(
            self.url, params=dict(params), data=body, headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
            return response.status

    async def send(self, message: Mapping[str, Any]) -> int:
        """Deliver one message; returns the HTTP status."""
        params, body = self.build(message)
        return await self.post(params, body)

    async def verify_url(self, echo: str = "aibot-echo") -> tuple[int, str]:
        timestamp = str(int(self._now()))
        nonce = str(secrets.randbelow(10**10))
        echostr, signature = self._crypto.encrypt(echo, nonce=nonce, timestamp=timestamp)
        params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
        async with self._http.get(self.url, params=params) as response:
            return response.status, await response.text()
