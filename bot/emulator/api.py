"""The emulated WeCom server API (same paths as https://qyapi.weixin.qq.com), as an aiohttp app.

Every call goes through one dispatcher, in this order:

1. count the call (``counters.api_calls[path]``) and wait the injected latency;
2. parse the JSON body (47001 when it is not JSON);
3. check ``access_token``: 41001 missing, 40014 unknown or invalidated, 42001 expired; a customer-contact
   API called with an app not allowed to call them answers 48002;
4. per-API frequency limit (45009, then the API is blocked for 60 s);
5. injected faults (scripted bursts, then random ``-1``);
6. the handler. WeCom answers HTTP 200 with ``errcode``/``errmsg`` in the JSON, errors included.

``GET /emulator/snapshot`` and ``GET /emulator/counters`` expose the state for demos and benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.emulator import api_contacts, api_groupmsg, api_groups, api_kf, api_outreach, api_tags, api_transfer
from bot.emulator.routes import ROUTES, ApiCall, ApiError, Route, errmsg, route
from bot.emulator.state import EmulatorState
from bot.emulator.tokens import ERR_BAD_SECRET

log = logging.getLogger(__name__)

STATE_KEY = web.AppKey("emulator_state", EmulatorState)
HANDLER_MODULES = (
    api_contacts,
    api_groupmsg,
    api_groups,
    api_kf,
    api_outreach,
    api_tags,
    api_transfer,
)  # importing them registers their routes

ERR_NO_TOKEN = 41001
ERR_FORBIDDEN = 48002
ERR_BAD_JSON = 47001


@route("gettoken", "GET", needs_token=False)
def gettoken(call: ApiCall) -> dict[str, Any]:
    state = call.state
    if call.query.get("corpid", "") != state.corp_id:
        raise ApiError(40013)
    secret = call.query.get("corpsecret", "")
    if secret not in state.apps:
        raise ApiError(ERR_BAD_SECRET)
    token, expires_in = state.tokens.issue(secret, state.now())
    return {"access_token": token, "expires_in": expires_in}


def _answer(state: EmulatorState, api: str, errcode: int, result: dict[str, Any] | None = None) -> web.Response:
    if errcode:
        state.counters.api_errors[(api, errcode)] += 1
    payload = {"errcode": errcode, "errmsg": errmsg(errcode), **(result or {})}
    return web.Response(text=json.dumps(payload, ensure_ascii=False), content_type="application/json", charset="utf-8")


async def _body(request: web.Request) -> dict[str, Any] | None:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _dispatcher(target: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    api = target.api

    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        state.counters.api_calls[api] += 1
        # the whole request has arrived before WeCom "thinks": a caller that dies during the latency still had its
        # call carried out (only the answer is lost), as with the real service
        body = await _body(request) if request.method == "POST" else {}
        delay = state.faults.delay()
        if delay:
            await asyncio.sleep(delay)
        if body is None:
            return _answer(state, api, ERR_BAD_JSON)
        app = None
        if target.needs_token:
            token = request.query.get("access_token", "")
            if not token:
                return _answer(state, api, ERR_NO_TOKEN)
            errcode, secret = state.tokens.check(token, state.now())
            if errcode:
                return _answer(state, api, errcode)
            app = state.apps.get(secret)
            if app is None or (target.contact_api and not app.contact_api):
                return _answer(state, api, ERR_FORBIDDEN)
        if not state.rate_limits.allow(api, state.now()):
            return _answer(state, api, 45009)
        injected = state.faults.pick(api)
        if injected is not None:
            state.counters.faults_injected[(api, injected)] += 1
            return _answer(state, api, injected)
        call = ApiCall(state=state, api=api, query=request.query, body=body, app=app)
        try:
            result = target.handler(call)
        except ApiError as exc:
            log.info("emulator api error", extra={"api": api, "errcode": exc.errcode, "reason": str(exc)})
            return _answer(state, api, exc.errcode)
        return _answer(state, api, 0, result)

    return handle


async def _snapshot(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].snapshot(), dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def _counters(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(state.counters.as_dict())


def create_emulator_app(state: EmulatorState) -> web.Application:
    """An aiohttp application serving ``state`` at WeCom's paths (``/cgi-bin/...``)."""
    app = web.Application()
    app[STATE_KEY] = state
    for target in ROUTES.values():
        app.router.add_route(target.method, f"/cgi-bin/{target.api}", _dispatcher(target))
    app.router.add_get("/emulator/snapshot", _snapshot)
    app.router.add_get("/emulator/counters", _counters)
    return app
