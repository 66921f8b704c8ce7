"""The async WeCom API client: one shared aiohttp session, a cached token, rate limits, typed errors.

:meth:`WeComClient.call` adds the access token, waits for the rate limiter, maps errcodes to typed errors
(:mod:`bot.wecom.errors`) and refreshes the token once on 40014/42001/41001. It never retries anything
else: retries with backoff and deadlines belong to the caller (the outbox dispatcher).

A caller that must not wait long (a welcome message has a deadline, a dispatcher holds a lease) wraps its
calls in :meth:`WeComClient.deadline`: limiter waits past it raise :class:`RateLimitedError` with a
``retry_after`` instead of sleeping, and HTTP timeouts are cut to it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bot.redis_keys import RedisKeys
from bot.settings import Settings
from bot.wecom.endpoints import EXTERNAL, drop_none
from bot.wecom.errors import (
    CredentialError,
    FatalError,
    MemberSlotUnavailable,
    RateLimitedError,
    TokenError,
    WeComError,
    error_for,
    transport_error,
)
from bot.wecom.groupmsg import GroupMsgApi
from bot.wecom.ratelimit import InProcessRateLimiter, Rate, RateLimiter, RedisRateLimiter
from bot.wecom.tags import CorpTagApi
from bot.wecom.token import (
    Clock,
    FetchedToken,
    InProcessTokenCache,
    RedisTokenCache,
    TokenCache,
    secret_fingerprint,
)
from bot.wecom.transfers import TransferApi

log = logging.getLogger(__name__)

GETTOKEN = "/cgi-bin/gettoken"
MESSAGE_SEND = "/cgi-bin/message/send"
BAD_SECRET_COOLDOWN = 300.0  # after gettoken says 40001, fail fast instead of hammering gettoken
MINUTE, HOUR = 60.0, 3600.0
# WeCom counts a call when it arrives, a few ms after our limiter granted it: a per-API window one second longer
# than WeCom's keeps a full minute's burst from meeting 45009 (and a 60 s block) when the window refills.
API_WINDOW_SLACK = 1.0

_call_deadline: ContextVar[float | None] = ContextVar("wecom_call_deadline", default=None)


_CREDENTIALS_IN_URL = re.compile(r"(access_token|corpsecret)=[^&\s'\"]*")


def _redact(text: str) -> str:
    """Error texts end up in logs and the outbox table: never with a secret or a token in them."""
    return _CREDENTIALS_IN_URL.sub(r"\1=***", text)


class WeComClient(GroupMsgApi, CorpTagApi, TransferApi):
    """Group-send methods (add_msg_template and its read-back) come from :class:`GroupMsgApi`, customer
    transfer (在职继承) methods from :class:`TransferApi`."""

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        api_base: str,
        corp_id: str,
        secret: str,
        tokens: TokenCache,
        limiter: RateLimiter,
        settings: Settings,
        clock: Clock = time.time,
        timeout: float = 10.0,
    ) -> None:
        self._http = http
        self._api_base = api_base.rstrip("/")
        self._corp_id = corp_id
        self._secret = secret
        self._tokens = tokens
        self._limiter = limiter
        self._settings = settings
        self._clock = clock
        self._timeout = timeout
        self._bad_secret: tuple[float, CredentialError] | None = None

    @property
    def corp_id(self) -> str:
        return self._corp_id

    def now(self) -> float:
        """The client's clock (epoch seconds), for callers that stamp what the answer changed."""
        return self._clock()

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Calls made inside must finish by ``at`` (epoch seconds of the client's clock)."""
        current = _call_deadline.get()
        token = _call_deadline.set(at if current is None else min(at, current))
        try:
            yield
        finally:
            _call_deadline.reset(token)

    def _remaining(self) -> float | None:
        at = _call_deadline.get()
        return None if at is None else at - self._clock()

    # --- transport --------------------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, params: dict[str, Any], json: dict[str, Any] | None
    ) -> dict[str, Any]:
        remaining = self._remaining()
        total = self._timeout if remaining is None else max(0.1, min(self._timeout, remaining))
        try:
            async with self._http.request(
                method,
                self._api_base + path,
                params=params,
                json=json,
                timeout=aiohttp.ClientTimeout(total=total),
            ) as response:
                if response.status >= 500:
                    raise transport_error(path, f"HTTP {response.status}")
                if response.status == 429:  # a proxy in front of WeCom throttling us
                    raise RateLimitedError(None, "HTTP 429", path, retry_after=MINUTE)
                if response.status != 200:
                    raise FatalError(None, f"HTTP {response.status}", path)
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(path, _redact(f"{type(exc).__name__}: {exc}")) from exc
        except ValueError as exc:  # not JSON
            raise transport_error(path, _redact(f"unreadable response: {exc}")) from exc
        if not isinstance(body, dict):
            raise transport_error(path, "response is not a JSON object")
        return body

    async def _fetch_token(self) -> FetchedToken:
        if self._bad_secret is not None:
            since, refusal = self._bad_secret
            if self._clock() - since < BAD_SECRET_COOLDOWN:
                raise refusal
            self._bad_secret = None
        body = await self._request("GET", GETTOKEN, {"corpid": self._corp_id, "corpsecret": self._secret}, None)
        errcode = int(body.get("errcode", 0))
        if errcode != 0:
            error = error_for(errcode, str(body.get("errmsg", "")), GETTOKEN)
            if isinstance(error, FatalError | TokenError):  # refreshing cannot fix gettoken itself
                refused = CredentialError(error.errcode, error.errmsg, GETTOKEN, retry_after=BAD_SECRET_COOLDOWN)
                self._bad_secret = (self._clock(), refused)
                log.error(
                    "gettoken refused; not retrying for %.0fs",
                    BAD_SECRET_COOLDOWN,
                    extra={"corp_id": self._corp_id, "secret": secret_fingerprint(self._secret), "errcode": errcode},
                )
                raise refused
            raise error
        log.info("access token refreshed", extra={"corp_id": self._corp_id, "expires_in": body.get("expires_in")})
        return FetchedToken(str(body["access_token"]), int(body.get("expires_in", 7200)))

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        rates: Sequence[Rate] = (),
    ) -> dict[str, Any]:
        """Call a WeCom API and return its JSON body; raise a :class:`WeComError` subclass on failure.

        ``rates`` are extra limits taken together with the per-API one (e.g. per-member message limits).
        """
        api_rate = Rate(f"api:{self._corp_id}:{path}", self._settings.api_rate_per_minute, MINUTE + API_WINDOW_SLACK)
        pending_rates = [api_rate, *rates]
        refreshed = False
        while True:
            await self._limiter.acquire_many(pending_rates, api=path, max_wait=self._remaining())
            pending_rates = [api_rate]  # a retry after a token refresh is one more API call, not one more message
            token = await self._tokens.get(self._fetch_token)
            body = await self._request(method, path, {**(params or {}), "access_token": token}, json)
            errcode = int(body.get("errcode", 0))
            if errcode == 0:
                return body
            error = error_for(errcode, str(body.get("errmsg", "")), path)
            if isinstance(error, TokenError) and not refreshed:
                refreshed = True
                log.info("access token rejected; refreshing once", extra={"api": path, "errcode": errcode})
                await self._tokens.invalidate(token)
                continue
            if isinstance(error, RateLimitedError) and errcode == 45009 and error.retry_after:
                await self._limiter.block(path, error.retry_after)
                log.warning("API blocked after 45009", extra={"api": path, "seconds": error.retry_after})
            raise error

    # --- contacts and staff ---------------------------------------------------------------------------

    async def get_follow_user_list(self) -> dict[str, Any]:
        return await self.call("GET", f"{EXTERNAL}/get_follow_user_list")

    async def get_user(self, userid: str) -> dict[str, Any]:
        return await self.call("GET", "/cgi-bin/user/get", params={"userid": userid})

    async def get_external_contact(self, external_userid: str, cursor: str = "") -> dict[str, Any]:
        params = {"external_userid": external_userid}
        if cursor:
            params["cursor"] = cursor
        return await self.call("GET", f"{EXTERNAL}/get", params=params)

    async def list_external_contacts(self, userid: str) -> dict[str, Any]:
        return await self.call("GET", f"{EXTERNAL}/list", params={"userid": userid})

    async def batch_get_by_user(self, userid_list: list[str], cursor: str = "", limit: int = 100) -> dict[str, Any]:
        body = {"userid_list": userid_list, "cursor": cursor, "limit": limit}
        return await self.call("POST", f"{EXTERNAL}/batch/get_by_user", json=body)

    async def remark(
        self,
        userid: str,
        external_userid: str,
        *,
        remark: str | None = None,
        description: str | None = None,
        remark_company: str | None = None,
        remark_mobiles: list[str] | None = None,
    ) -> dict[str, Any]:
        body = drop_none(
            {
                "userid": userid,
                "external_userid": external_userid,
                "remark": remark,
                "description": description,
                "remark_company": remark_company,
                "remark_mobiles": remark_mobiles,
            }
        )
        return await self.call("POST", f"{EXTERNAL}/remark", json=body)

    # --- groups -----------------------------------------------------------------------------------------

    async def groupchat_list(
        self, cursor: str = "", limit: int = 1000, status_filter: int = 0, owner_userids: list[str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status_filter": status_filter, "cursor": cursor, "limit": limit}
        if owner_userids:
            body["owner_filter"] = {"userid_list": owner_userids}
        return await self.call("POST", f"{EXTERNAL}/groupchat/list", json=body)

    async def groupchat_get(self, chat_id: str, need_name: int = 1) -> dict[str, Any]:
        return await self.call("POST", f"{EXTERNAL}/groupchat/get", json={"chat_id": chat_id, "need_name": need_name})

    # --- messages and contact ways ----------------------------------------------------------------------

    async def send_welcome_msg(
        self,
        welcome_code: str,
        text: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body = drop_none({"welcome_code": welcome_code, "text": text, "attachments": attachments or None})
        return await self.call("POST", f"{EXTERNAL}/send_welcome_msg", json=body)

    async def add_contact_way(
        self,
        *,
        type: int,
        scene: int,
        state: str | None = None,
        user: list[str] | None = None,
        party: list[int] | None = None,
        skip_verify: bool = True,
        remark: str | None = None,
        style: int | None = None,
        is_temp: bool | None = None,
        expires_in: int | None = None,
    ) -> dict[str, Any]:
        body = drop_none(
            {
                "type": type,
                "scene": scene,
                "state": state,
                "user": user,
                "party": party,
                "skip_verify": skip_verify,
                "remark": remark,
                "style": style,
                "is_temp": is_temp,
                "expires_in": expires_in,
            }
        )
        return await self.call("POST", f"{EXTERNAL}/add_contact_way", json=body)

    # --- app messages -----------------------------------------------------------------------------------

    def _member_rates(self, payload: dict[str, Any]) -> list[Rate]:
        recipients = sorted({user for user in str(payload.get("touser", "")).split("|") if user})
        rates: list[Rate] = []
        for user in recipients:
            bucket = f"member:{self._corp_id}:{user}"
            rates.append(Rate(f"{bucket}:minute", self._settings.member_messages_per_minute, MINUTE))
            rates.append(Rate(f"{bucket}:hour", self._settings.member_messages_per_hour, HOUR))
        return rates

    async def send_app_message(self, payload: dict[str, Any], *, wait_for_slot: bool = True) -> dict[str, Any]:
        """Send an app message to staff (``touser`` = ``"a|b|c"``).

        WeCom silently drops messages beyond 30 per member per minute or 1000 per hour, so a slot of both
        windows is taken for every recipient, all at once, before sending: the message waits (or raises
        :class:`RateLimitedError` past the caller's deadline) instead of vanishing. With
        ``wait_for_slot=False`` it never waits for a member slot: when one is missing it takes nothing and
        raises :class:`MemberSlotUnavailable` at once, whose ``retry_after`` says when one frees up.
        ``toparty``/``totag`` recipients cannot be counted per member; notifications address members by
        ``touser``.
        """
        body = {**payload, "agentid": self._settings.agent_id}
        rates = self._member_rates(payload)
        if wait_for_slot or not rates:
            return await self.call("POST", MESSAGE_SEND, json=body, rates=rates)
        wait = await self._limiter.try_acquire_many(rates)
        if wait > 0:
            members = ",".join(sorted({rate.bucket.rsplit(":", 2)[1] for rate in rates}))
            raise MemberSlotUnavailable(
                None, f"member message limit: next slot in {wait:.1f}s", members, retry_after=wait
            )
        return await self.call("POST", MESSAGE_SEND, json=body)


def build_wecom_client(
    settings: Settings,
    http: aiohttp.ClientSession,
    redis: Redis | None,
    *,
    clock: Clock = time.time,
) -> WeComClient:
    """The client for ``settings``: Redis-backed token and limits when ``redis`` is given, else in-process."""
    tokens: TokenCache
    limiter: RateLimiter
    if redis is not None:
        keys = RedisKeys(settings.redis_prefix)
        tokens = RedisTokenCache(redis, keys, corp_id=settings.corp_id, secret=settings.app_secret, clock=clock)
        limiter = RedisRateLimiter(redis, keys, clock=clock)
    else:
        tokens = InProcessTokenCache(clock=clock)
        limiter = InProcessRateLimiter(clock=clock)
    return WeComClient(
        http=http,
        api_base=settings.wecom_api_base,
        corp_id=settings.corp_id,
        secret=settings.app_secret,
        tokens=tokens,
        limiter=limiter,
        settings=settings,
        clock=clock,
    )


__all__ = ["WeComClient", "WeComError", "build_wecom_client"]
