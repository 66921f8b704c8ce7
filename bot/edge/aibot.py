"""The AI bot (智能机器人) endpoint: ``/wecom/aibot``, where WeCom posts what users @-mention the bot with.

Same crypto as the app callbacks (:mod:`bot.edge.crypto`) with receive id ``""``, but JSON instead of XML: the POST
body is ``{"encrypt": "…"}``, signed over that ciphertext, and the plaintext is a JSON message (msgid,
aibotid, chatid, chattype single|group, from.userid, msgtype, text.content). The URL check is a GET with an
encrypted echostr, answered with the plaintext.

A message is stored straight away (source ``aibot``, one insert deduplicated by msgid, the intent pipeline
for new customer messages) and answered with an empty 200: the bot does not reply by itself. Stream
refreshes and events carry no new words and are only acknowledged.

Order of checks for a POST: size (413) → JSON body with ``encrypt`` (400) → signature (403) → timestamp
window (403) → decrypt + receive id (400/403) → JSON message with msgid (400) → store. The signature covers the
``encrypt`` field, so the envelope must be parsed before it can be checked: that parse is bounded to
``ENVELOPE_MAX_DEPTH`` levels (the envelope is one flat object) within ``LIANYI_MAX_BODY_BYTES``, measured before
the parser runs (:mod:`bot.edge.bounded_json`); the decrypted message to ``MESSAGE_MAX_DEPTH``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlmodel import select

from bot.edge.bounded_json import JsonRefused, load_bounded_json
from bot.edge.callback import (
    GET_PARAMS,
    POST_PARAMS,
    CallbackRefused,
    authenticate,
    decrypt,
    read_callback_body,
    require_params,
)
from bot.edge.crypto import CallbackCrypto
from bot.settings import Settings
from scrm.db import SessionFactory, write_transaction
from scrm.intent.ingest import IncomingMessage, store_message
from scrm.models import Staff
from scrm.services import Services

log = logging.getLogger(__name__)

AIBOT_PATH = "/wecom/aibot"
AIBOT_RECEIVE_ID = ""
STORED_MSGTYPES = frozenset({"text", "mixed", "image", "voice", "file"})
_CUSTOMER_ID_PREFIXES = ("wm", "wo")  # external_userid of a WeChat customer
ENVELOPE_MAX_DEPTH = 2  # {"encrypt": "…"} is depth 1; one level of slack for a field WeCom may add
MESSAGE_MAX_DEPTH = 16  # the deepest known message (mixed.msg_item[].text.content) is depth 4


class AiBotEndpoint:
    """Verifies AI bot callbacks for one corp and stores their messages."""

    def __init__(
        self,
        settings: Settings,
        session_factory: SessionFactory,
        services: Services,
        *,
        now: Callable[[], datetime],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.aibot_token or not settings.aibot_aes_key:
            raise ValueError("the AI bot endpoint needs LIANYI_AIBOT_TOKEN and LIANYI_AIBOT_AES_KEY")
        self._settings = settings
        self._factory = session_factory
        self._services = services
        self._now = now
        self._clock = clock
        self._crypto = CallbackCrypto(settings.aibot_token, settings.aibot_aes_key, AIBOT_RECEIVE_ID)

    # ---- transport-free core ------------------------------------------------------------------------

    def verify_url(self, query: Mapping[str, str]) -> str:
        sig, timestamp, nonce, echostr = require_params(query, GET_PARAMS)
        self._authenticate(sig, timestamp, nonce, echostr)
        return self._decrypt(echostr)

    async def accept(self, query: Mapping[str, str], body: bytes) -> bool:
        """Verify, decrypt and store one POST; True when a new message was stored."""
        sig, timestamp, nonce = require_params(query, POST_PARAMS)
        encrypt = _json_object(body, ENVELOPE_MAX_DEPTH, "body").get("encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise CallbackRefused(400, "missing_encrypt", 'body has no "encrypt" string')
        self._authenticate(sig, timestamp, nonce, encrypt)
        message = _json_object(self._decrypt(encrypt), MESSAGE_MAX_DEPTH, "decrypted message")
        msgid = message.get("msgid")
        if not isinstance(msgid, str) or not msgid:
            raise CallbackRefused(400, "missing_msgid", "decrypted message has no msgid")
        msgtype = str(message.get("msgtype") or "")
        if msgtype not in STORED_MSGTYPES:
            log.debug("aibot callback acknowledged", extra={"msgtype": msgtype, "msgid": msgid})
            return False
        corp_id = self._settings.corp_id
        async with write_transaction(self._factory) as session:
            # A known member is staff; otherwise a WeChat customer's id starts with wm/wo, anything else is staff.
            sender = _sender(message)
            stmt = select(Staff.id).where(Staff.corp_id == corp_id, Staff.userid == sender)
            known_staff = bool(sender) and (await session.exec(stmt)).first() is not None
            is_staff = known_staff or not sender.startswith(_CUSTOMER_ID_PREFIXES)
            incoming = aibot_message(message, sender_is_staff=is_staff, now=self._now())
            services = self._services
            return await store_message(
                session, corp_id, incoming, intent=services.intent, hooks=services, now=self._now()
            )

    def _authenticate(self, sig: str, timestamp: str, nonce: str, data: str) -> None:
        authenticate(
            self._crypto, sig, timestamp, nonce, data, now=self._clock(), max_age=self._settings.callback_max_age
        )

    def _decrypt(self, encrypt_b64: str) -> str:
        return decrypt(self._crypto, encrypt_b64)

    # ---- aiohttp adapter ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application, path: str = AIBOT_PATH) -> None:
        app.router.add_get(path, self._handle_get)
        app.router.add_post(path, self._handle_post)

    async def _handle_get(self, request: web.Request) -> web.Response:
        try:
            return web.Response(text=self.verify_url(request.query), content_type="text/plain")
        except CallbackRefused as exc:
            return _refuse(exc)

    async def _handle_post(self, request: web.Request) -> web.Response:
        try:
            body = await read_callback_body(request, self._settings.max_body_bytes)
            new = await self.accept(request.query, body)
        except CallbackRefused as exc:
            return _refuse(exc)
        log.debug("aibot message", extra={"new": new})
        return web.Response(status=200, body=b"")


def aibot_message(message: Mapping[str, Any], *, sender_is_staff: bool, now: datetime) -> IncomingMessage:
    """The decrypted AI bot JSON as a message row (a group message keeps its chatid)."""
    msgtype = str(message.get("msgtype") or "text")
    chat_type = "group" if message.get("chattype") == "group" else "single"
    sender = _sender(message)
    return IncomingMessage(
        source="aibot",
        msgid=str(message["msgid"]),
        sent_at=_sent_at(message.get("create_time"), now),
        chat_type=chat_type,
        chat_id=str(message.get("chatid") or "") if chat_type == "group" else "",
        external_userid="" if sender_is_staff else sender,
        userid=sender if sender_is_staff else "",
        sender_type="staff" if sender_is_staff else "customer",
        msgtype=msgtype,
        text=_text_of(message, msgtype),
        payload=dict(message),
    )


def _sent_at(created: Any, now: datetime) -> datetime:
    """``create_time`` (epoch seconds) when it is one a datetime can hold, else the time of receipt."""
    if isinstance(created, int | float) and not isinstance(created, bool):
        try:
            return datetime.fromtimestamp(int(created), UTC)
        except (OverflowError, OSError, ValueError):
            log.warning("aibot create_time out of range; using the time of receipt", extra={"create_time": created})
    return now


def _sender(message: Mapping[str, Any]) -> str:
    sender = message.get("from")
    return str(sender.get("userid") or "") if isinstance(sender, dict) else ""


def _text_of(message: Mapping[str, Any], msgtype: str) -> str:
    if msgtype == "text":
        text = message.get("text")
        return str(text.get("content") or "") if isinstance(text, dict) else ""
    if msgtype == "mixed":
        mixed = message.get("mixed")
        items = mixed.get("msg_item") if isinstance(mixed, dict) else None
        parts = [
            str(item["text"].get("content") or "")
            for item in items or []
            if isinstance(item, dict) and item.get("msgtype") == "text" and isinstance(item.get("text"), dict)
        ]
        return "\n".join(p for p in parts if p)
    return ""


def _json_object(document: str | bytes, max_depth: int, what: str) -> dict[str, Any]:
    """A JSON object at most ``max_depth`` deep; 400 with the refusal's code (``json_too_deep``, ``bad_json``,
    ``not_utf8``, ``not_object``) otherwise."""
    try:
        value = load_bounded_json(document, max_depth, what=what)
    except JsonRefused as exc:
        raise CallbackRefused(400, exc.code, exc.en) from None
    if not isinstance(value, dict):
        raise CallbackRefused(400, "not_object", f"{what} is not a JSON object")
    return value


def _refuse(exc: CallbackRefused) -> web.Response:
    log.warning("aibot callback refused: %s", exc.detail, extra={"reason": exc.reason, "status": exc.status})
    return web.Response(status=exc.status)
