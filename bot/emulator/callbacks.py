"""The emulated callback sender: real encrypted, signed WeCom callbacks, delivered the way WeCom does.

:func:`render_xml` turns a world action's fields into the plaintext XML (CDATA for strings, numbers bare,
``MemChangeList`` as ``<Item>`` elements). :class:`CallbackDriver` encrypts it with
:class:`bot.edge.crypto.CallbackCrypto`, signs it, and POSTs ``?msg_signature&timestamp&nonce`` with WeCom's
behaviour (90238): an answer must be HTTP 200 within 5 s, anything else (another status, a timeout, a
dropped connection) is retried, three attempts in all.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.edge.crypto import CallbackCrypto, build_post_body

log = logging.getLogger(__name__)


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_xml(fields: Mapping[str, Any]) -> str:
    """The plaintext callback XML for ``fields`` (element order kept)."""
    parts = ["<xml>"]
    for name, value in fields.items():
        if isinstance(value, bool):
            text = str(int(value))
        elif isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            text = "".join(f"<Item>{_cdata(str(item))}</Item>" for item in value)
        else:
            text = _cdata(str(value))
        parts.append(f"<{name}>{text}</{name}>")
    parts.append("</xml>")
    return "".join(parts)


@dataclass(slots=True)
class CallbackResult:
    """How one callback went: attempts made, the last HTTP status (None: timeout or connection error)."""

    attempts: int
    status: int | None
    ok: bool
    latencies: list[float] = field(default_factory=list)
    error: str = ""
    body: str = ""


class CallbackDriver:
    """Sends callbacks for one corp to one URL (the Lianyi edge under test)."""

    def __init__(
        self,
        url: str,
        token: str,
        aes_key: str,
        corp_id: str,
        *,
        http: aiohttp.ClientSession,
        timeout: float = 5.0,
        retries: int = 3,
        agent_id: str = "",
        retry_delay: float = 0.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        if retries < 1:
            raise ValueError("retries counts attempts in all and must be >= 1")
        self.url = url
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self._crypto = CallbackCrypto(token, aes_key, corp_id)
        self._http = http
        self._now = now
        self.latencies: list[float] = []  # every attempt, in order
        self.results: list[CallbackResult] = []

    def build(self, fields: Mapping[str, Any]) -> tuple[dict[str, str], str]:
        """The query string and body of one encrypted, signed callback POST."""
        timestamp = str(int(self._now()))
        nonce = str(secrets.randbelow(10**10))
        encrypt_b64, signature = self._crypto.encrypt(render_xml(fields), nonce=nonce, timestamp=timestamp)
        params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}
        return params, build_post_body(encrypt_b64, self.corp_id, self.agent_id)

    async def send(self, fields: Mapping[str, Any]) -> CallbackResult:
        """Deliver one callback; the same signed body is retried until a 200 or ``retries`` attempts."""
        params, body = self.build(fields)
        result = CallbackResult(attempts=0, status=None, ok=False)
        client_timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(1, self.retries + 1):
            result.attempts = attempt
            started = time.monotonic()
            try:
                async with self._http.post(
                    self.url,
                    params=params,
                    data=body.encode(),
                    timeout=client_timeout,
                    headers={"Content-Type": "text/xml; charset=utf-8"},
                ) as response:
                    result.body = await response.text()
                    result.status, result.error = response.status, ""
            except TimeoutError:
                result.status, result.error = None, f"no answer within {self.timeout} s"
            except aiohttp.ClientError as exc:
                result.status, result.error = None, f"{type(exc).__name__}: {exc}"
            elapsed = time.monotonic() - started
            result.latencies.append(elapsed)
            self.latencies.append(elapsed)
            if result.status == 200:
                result.ok = True
                break
            log.info(
                "emulator callback attempt failed",
                extra={"attempt": attempt, "status": result.status, "reason": result.error or "non-200"},
            )
            if attempt < self.retries and self.retry_delay:
                await asyncio.sleep(self.retry_delay)
        self.results.append(result)
        return result

    async def verify_url(self, echo: str | None = None) -> bool:
        """WeCom's URL check (GET with an encrypted echostr): True when the reply is the plaintext."""
        plain = echo or str(secrets.randbelow(10**19))
        timestamp = str(int(self._now()))
        nonce = str(secrets.randbelow(10**10))
        echostr, signature = self._crypto.encrypt(plain, nonce=nonce, timestamp=timestamp)
        params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
        async with self._http.get(self.url, params=params, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
            return resp.status == 200 and await resp.text() == plain
