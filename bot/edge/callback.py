"""The callback edge: verify, decrypt, parse, put in the inbox, answer. Nothing else happens in a request.

Two layers (STYLE.md lessons 1 and 2):

- :meth:`CallbackEdge.verify_url` and :meth:`CallbackEdge.accept` are the transport-free core. They take
  the query mapping and the raw body and either return a result or raise :class:`CallbackRefused`, which
  carries the HTTP status and a short reason code.
- :meth:`CallbackEdge.add_routes` mounts a thin aiohttp handler that reads the body within
  ``max_body_bytes``, calls the core, and turns the outcome into a response, one log line and metrics.

Order of checks for a POST: size (413) → outer XML (400) → signature over Encrypt (403) → timestamp window
(403) → decrypt + receive id (400 garbage / 403 other receiver) → inner XML (400) → typed event → inner
ToUserName is our corp (403) → inbox (503 when it cannot take the event). Success, duplicates and unknown
events alike get an empty 200, so WeCom stops retrying.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError as SqlInterfaceError
from sqlalchemy.exc import OperationalError as SqlOperationalError

from bot.edge.body import BodyTooLarge, read_body
from bot.edge.crypto import BadTimestamp, CallbackCrypto, CallbackRejected, DecryptFailed, check_timestamp
from bot.edge.events import UnknownEvent, WeComEvent, parse_event
from bot.edge.xmlparse import MalformedXml, parse_xml_fields
from bot.inbox.base import Inbox, InboxItem, InboxUnavailable
from bot.metrics import CALLBACK_ACK_SECONDS, CALLBACK_EVENTS, CALLBACKS
from bot.settings import Settings
from scrm.errors import LianyiError

log = logging.getLogger(__name__)

GET_PARAMS = ("msg_signature", "timestamp", "nonce", "echostr")
POST_PARAMS = ("msg_signature", "timestamp", "nonce")
_METHOD_LABELS = frozenset({"GET", "POST"})

# HTTP status of each verification failure (bad input is 400, an unauthenticated or foreign message 403).
_STATUS_BY_REJECTION: dict[type[CallbackRejected], int] = {
    BadTimestamp: 400,
    DecryptFailed: 400,
}
_DEFAULT_REJECTION_STATUS = 403

# Failures of the inbox's backing store that mean "try again later", not "bug".
_INBOX_OUTAGES: tuple[type[BaseException], ...] = (
    InboxUnavailable,
    OSError,  # includes ConnectionError
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    SqlOperationalError,
    SqlInterfaceError,
)


class CallbackRefused(LianyiError):
    """The edge refuses a request: ``status`` is the HTTP answer, ``reason`` a short code for logs/metrics."""

    def __init__(self, status: int, reason: str, detail: str, *, cause: BaseException | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Accepted:
    """A POST callback that is now in the inbox (``new`` is False for a retry/duplicate)."""

    event: WeComEvent
    new: bool


class CallbackEdge:
    """Verifies WeCom callbacks for one corp and puts their typed events into the inbox."""

    def __init__(self, settings: Settings, inbox: Inbox, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._inbox = inbox
        self._clock = clock
        self._crypto = CallbackCrypto(settings.callback_token, settings.callback_aes_key, settings.corp_id)

    # ---- transport-free core ------------------------------------------------------------------------

    def verify_url(self, query: Mapping[str, str]) -> str:
        """The URL check (GET): return the decrypted echostr, which is the whole reply."""
        sig, timestamp, nonce, echostr = require_params(query, GET_PARAMS)
        self._authenticate(sig, timestamp, nonce, echostr)
        return self._decrypt(echostr)

    async def accept(self, query: Mapping[str, str], body: bytes) -> Accepted:
        """A callback POST whose body was read within the size limit: verify it and put it in the inbox."""
        sig, timestamp, nonce = require_params(query, POST_PARAMS)
        outer = _parse(body, "malformed_outer_xml", "outer XML")
        encrypt = outer.get("Encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise CallbackRefused(400, "missing_encrypt", "outer XML has no <Encrypt> text")
        self._authenticate(sig, timestamp, nonce, encrypt)
        fields = _parse(self._decrypt(encrypt), "malformed_inner_xml", "inner XML")
        event = parse_event(fields)
        if event.corp_id != self._settings.corp_id:
            raise CallbackRefused(
                403, "wrong_corp", f"inner ToUserName {event.corp_id[:64]!r} is not {self._settings.corp_id!r}"
            )
        new = await self._store(event)
        return Accepted(event=event, new=new)

    def _authenticate(self, sig: str, timestamp: str, nonce: str, data: str) -> None:
        authenticate(
            self._crypto, sig, timestamp, nonce, data, now=self._clock(), max_age=self._settings.callback_max_age
        )

    def _decrypt(self, encrypt_b64: str) -> str:
        return decrypt(self._crypto, encrypt_b64)

    async def _store(self, event: WeComEvent) -> bool:
        item = InboxItem(
            dedup_key=event.dedup_key,
            ordering_key=event.ordering_key,
            event_type=event.event_type,
            corp_id=self._settings.corp_id,
            payload=event.to_payload(),
        )
        try:
            return await self._inbox.put(item)
        except _INBOX_OUTAGES as exc:
            raise CallbackRefused(
                503, "inbox_unavailable", f"inbox cannot take {item.dedup_key}: {type(exc).__name__}: {exc}"
            ) from None
        except Exception as exc:  # a bug in a backend: WeCom retries a 503, the traceback is logged
            raise CallbackRefused(
                503, "internal_error", f"inbox.put failed for {item.dedup_key}: {exc!r}", cause=exc
            ) from None

    # ---- aiohttp adapter ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application, path: str = "/wecom/callback") -> None:
        """Mount the callback on ``path`` for every method (non-GET/POST are refused with a logged 405)."""
        app.router.add_route("*", path, self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        method = request.method if request.method in _METHOD_LABELS else "other"
        try:
            response, outcome = await self._respond(request)
        except CallbackRefused as exc:
            response, outcome = _refuse(exc, request), exc.reason
        except Exception as exc:  # never a 500; logged with its traceback so tests and operators see it
            refusal = CallbackRefused(400, "internal_error", f"unexpected {exc!r}", cause=exc)
            response, outcome = _refuse(refusal, request), refusal.reason
        _callback_counter(method, outcome).inc()
        _ack_histogram(method).observe(time.perf_counter() - started)
        return response

    async def _respond(self, request: web.Request) -> tuple[web.Response, str]:
        if request.method == "GET":
            return web.Response(text=self.verify_url(request.query), content_type="text/plain"), "verified"
        if request.method != "POST":
            raise CallbackRefused(405, "method_not_allowed", f"method {request.method[:16]} is not GET or POST")
        body = await self._read_body(request)
        accepted = await self.accept(request.query, body)
        _log_accepted(accepted)
        return web.Response(status=200, body=b""), "stored" if accepted.new else "duplicate"

    async def _read_body(self, request: web.Request) -> bytes:
        return await read_callback_body(request, self._settings.max_body_bytes)


@functools.cache
def _callback_counter(method: str, outcome: str) -> Counter:
    """The labelled child of ``lianyi_callbacks_total`` (looked up once per method and outcome)."""
    return CALLBACKS.labels(method=method, outcome=outcome)


@functools.cache
def _ack_histogram(method: str) -> Histogram:
    return CALLBACK_ACK_SECONDS.labels(method=method)


@functools.cache
def _event_counter(event_type: str) -> Counter:
    return CALLBACK_EVENTS.labels(event_type=event_type)


def require_params(query: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """The named query parameters of a WeCom callback, or a 400 naming the missing ones."""
    values = [query.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise CallbackRefused(400, "missing_parameters", f"missing query parameters: {', '.join(missing)}")
    return values


def _parse(document: str | bytes, reason: str, what: str) -> dict[str, Any]:
    try:
        return parse_xml_fields(document)
    except MalformedXml as exc:
        raise CallbackRefused(400, reason, f"{what}: {exc}") from None


async def read_callback_body(request: web.Request, limit: int) -> bytes:
    try:
        return await read_body(request, limit)
    except BodyTooLarge as exc:
        raise CallbackRefused(413, "body_too_large", exc.detail) from None


def authenticate(
    crypto: CallbackCrypto, sig: str, timestamp: str, nonce: str, data: str, *, now: float, max_age: int
) -> None:
    """Signature (constant-time) and timestamp window of a callback; :class:`CallbackRefused` if either fails."""
    try:
        crypto.verify(sig, timestamp, nonce, data)
        check_timestamp(timestamp, now=now, max_age=max_age)
    except CallbackRejected as exc:
        raise _refusal(exc) from None


def decrypt(crypto: CallbackCrypto, encrypt_b64: str) -> str:
    """The plaintext of a callback's encrypted part (receiver id checked); :class:`CallbackRefused` if not."""
    try:
        return crypto.decrypt(encrypt_b64)
    except CallbackRejected as exc:
        raise _refusal(exc) from None


def _refusal(exc: CallbackRejected) -> CallbackRefused:
    status = _STATUS_BY_REJECTION.get(type(exc), _DEFAULT_REJECTION_STATUS)
    return CallbackRefused(status, exc.reason, str(exc))


def _refuse(exc: CallbackRefused, request: web.Request) -> web.Response:
    """The one log line of a refusal, and its response (no body that could help an attacker)."""
    extra = {"reason": exc.reason, "status": exc.status, "method": request.method[:16], "path": request.path}
    if exc.cause is not None:
        log.error("callback refused: %s", exc.detail, extra=extra, exc_info=exc.cause)
    else:
        log.warning("callback refused: %s", exc.detail, extra=extra)
    headers = {"Allow": "GET, POST"} if exc.status == 405 else None
    return web.Response(status=exc.status, headers=headers)


def _log_accepted(accepted: Accepted) -> None:
    """Count the event; log unknown events (WARNING) and duplicates (INFO), stored ones only at DEBUG.

    Stored events are counted in ``lianyi_callback_events_total`` and kept in the inbox; an INFO line for
    each would cost more CPU than the rest of the request (JSON formatting), hence DEBUG.
    """
    event = accepted.event
    if accepted.new:
        _event_counter(event.event_type).inc()
        if not isinstance(event, UnknownEvent) and not log.isEnabledFor(logging.DEBUG):
            return
    extra = {"event_type": event.event_type, "dedup_key": event.dedup_key, "new": accepted.new}
    if isinstance(event, UnknownEvent):
        log.warning(
            "unknown callback event stored: MsgType=%r Event=%r ChangeType=%r",
            event.msg_type,
            event.event,
            event.change_type,
            extra=extra,
        )
    elif accepted.new:
        log.debug("callback stored: %s", event.event_type, extra=extra)
    else:
        log.info("callback duplicate: %s", event.event_type, extra=extra)
