"""The staff lead API (the sidebar will call it; today scripts and the emulator's people do), a thin aiohttp
layer over :mod:`scrm.leads.actions`:

- ``GET /api/leads[?status=]`` (advisor: own open leads; manager: the dealer's; operator: all, the pool
  included), ``GET /api/leads/{id}`` (with contact, reasons, what they asked, history),
  ``GET /api/leads/metrics[?since=&until=&dealer=]`` (managers: their dealer; operators and admins: any).
- ``POST /api/leads/{id}/accept``, ``/contacted``, ``/test-drive {"action": "book"|"done"|"no_show"}``,
  ``/ordered``, ``/delivered``, ``/lost {"reason", "note"}``; managers: ``/lost/approve``,
  ``/lost/reject {"note"}``, ``/reassign {"advisor_userid"?}`` (operators may reassign too).

Authentication (:mod:`bot.web.auth`): ``Authorization: Bearer <staff token>`` of an active staff member, or a
console session cookie (a POST then also needs the ``X-CSRF-Token`` header); 401 otherwise. Who may see and do
what is :mod:`bot.web.authz`. A lead action is recorded in the lead's history under the acting staff userid and
in an audit row (``lead.action``) under the acting principal: the console username, or ``staff:<userid>``.

Bodies are JSON objects of at most 64 KiB (413) nested at most ``MAX_JSON_DEPTH`` deep (measured before parsing;
400 ``json_too_deep``). Errors are ``{"error": code, "message": 中文}``, plus ``"message_en"`` for a body nested
too deep (``json_too_deep``) or holding what cannot be stored (``unstorable_json``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlmodel import select

from bot.edge.body import BodyTooLarge, read_body
from bot.edge.bounded_json import JsonRefused, check_json_depth, require_storable
from bot.web.auth import WebAuth
from bot.web.authz import Principal, report_dealer, require_lead_action
from bot.web.leads_views import lead_detail, lead_with_dealer, list_leads, parse_status
from scrm import audit
from scrm.db import write_transaction
from scrm.leads.actions import ActionInput, LeadActionError, lock_lead, perform
from scrm.leads.metrics import lead_metrics
from scrm.leads.services import LeadServices
from scrm.leads.transitions import TEST_DRIVE_ACTIONS, Action
from scrm.models import Dealer

log = logging.getLogger(__name__)

PREFIX = "/api/leads"
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8  # every body is one flat object today
DEFAULT_REPORT_DAYS = 30
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _error(status: int, code: str, message: str, message_en: str | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="lianyi-leads"'} if status == 401 else None
    body = {"error": code, "message": message} | ({"message_en": message_en} if message_en else {})
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _str_field(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise LeadActionError("bad_request", f"缺少字段 {name}", 400)
        return ""
    if not isinstance(value, str):
        raise LeadActionError("bad_request", f"字段 {name} 应为文字", 400)
    return value


def local_day_range(since: str | None, until: str | None, tz: str, now: datetime) -> tuple[datetime, datetime]:
    """``[since 00:00, the day after until 00:00)`` in ``tz``; both dates inclusive, the last 30 days by default."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    try:
        last = datetime.strptime(until, "%Y-%m-%d").date() if until else today
        first = datetime.strptime(since, "%Y-%m-%d").date() if since else last - timedelta(days=DEFAULT_REPORT_DAYS - 1)
    except ValueError:
        raise LeadActionError("bad_date", "日期格式应为 YYYY-MM-DD，例如 2026-03-01", 400) from None
    if first > last:
        raise LeadActionError("bad_date", f"开始日期 {first} 晚于结束日期 {last}", 400)
    start = datetime.combine(first, datetime.min.time(), zone)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone)
    return start, end


class LeadsApi:
    """The lead routes for one corp."""

    def __init__(
        self,
        auth: WebAuth,
        *,
        leads: LeadServices | None,
    ) -> None:
        """``leads`` None: the lead feature is off (reading still works, actions answer 503)."""
        self._auth = auth
        self._corp_id = auth.corp_id
        self._factory = auth.factory
        self._now = auth.now
        self._leads = leads

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PREFIX, self._guard(self._list))
        app.router.add_get(f"{PREFIX}/metrics", self._guard(self._metrics))
        app.router.add_get(PREFIX + "/{lead_id}", self._guard(self._detail))
        for path, action in (
            ("accept", Action.ACCEPT),
            ("contacted", Action.CONTACTED),
            ("ordered", Action.ORDERED),
            ("delivered", Action.DELIVERED),
            ("lost", Action.REQUEST_LOST),
            ("lost/approve", Action.APPROVE_LOST),
            ("lost/reject", Action.REJECT_LOST),
            ("reassign", Action.REASSIGN),
            ("test-drive", Action.BOOK_TEST_DRIVE),  # the body's "action" picks book, done or no_show
        ):
            app.router.add_post(PREFIX + "/{lead_id}/" + path, self._guard(self._action_handler(action)))

    def _guard(self, handler: Callable[[web.Request, Principal], Awaitable[web.Response]]) -> Handler:
        """Authenticate, then run ``handler``; a refusal becomes its JSON error."""

        async def guarded(request: web.Request) -> web.Response:
            try:
                principal = await self._auth.api_principal(request)
                return await handler(request, principal)
            except LeadActionError as exc:
                return _error(exc.http_status, exc.code, exc.message_zh)
            except JsonRefused as exc:
                return _error(400, exc.code, exc.zh, exc.en)

        return guarded

    def _lead_services(self) -> LeadServices:
        if self._leads is None:
            raise LeadActionError("unavailable", "线索模块未启用", 503)
        return self._leads

    async def _list(self, request: web.Request, principal: Principal) -> web.Response:
        status = parse_status(request.query.get("status"))
        async with self._factory() as session:
            leads = await list_leads(session, principal, status)
        return web.json_response({"leads": leads}, dumps=_dumps)

    async def _detail(self, request: web.Request, principal: Principal) -> web.Response:
        lead_id = _lead_id(request)
        async with self._factory() as session:
            body = await lead_detail(session, principal, lead_id)
        return web.json_response(body, dumps=_dumps)

    async def _metrics(self, request: web.Request, principal: Principal) -> web.Response:
        report_dealer(principal, None)  # refuse a role without reports before any other work
        services = self._lead_services()
        since, until = local_day_range(
            request.query.get("since"), request.query.get("until"), services.rules().timezone, self._now()
        )
        code = request.query.get("dealer", "")
        async with self._factory() as session:
            requested = None
            if code:
                statement = select(Dealer.id).where(Dealer.corp_id == self._corp_id, Dealer.code == code)
                requested = (await session.exec(statement)).first()
                if requested is None:
                    raise LeadActionError("bad_dealer", f"门店代码 {code} 不存在", 400)
            dealer_id = report_dealer(principal, requested)
            metrics = await lead_metrics(session, self._corp_id, since=since, until=until, dealer_id=dealer_id)
        return web.json_response(metrics.as_json(), dumps=_dumps)

    def _action_handler(self, action: Action) -> Callable[[web.Request, Principal], Awaitable[web.Response]]:
        async def handle(request: web.Request, principal: Principal) -> web.Response:
            lead_id = _lead_id(request)
            body = await _json_body(request)
            chosen, given = action, ActionInput()
            if action == Action.BOOK_TEST_DRIVE:
                kind = _str_field(body, "action", required=True)
                if kind not in TEST_DRIVE_ACTIONS:
                    raise LeadActionError(
                        "bad_request", "action 应为 book（预约）、done（已到店）或 no_show（未到店）", 400
                    )
                chosen = TEST_DRIVE_ACTIONS[kind]
            elif action == Action.REQUEST_LOST:
                given = ActionInput(reason=_str_field(body, "reason", required=True), note=_str_field(body, "note"))
            elif action == Action.REJECT_LOST:
                given = ActionInput(note=_str_field(body, "note"))
            elif action == Action.REASSIGN:
                given = ActionInput(advisor_userid=_str_field(body, "advisor_userid") or None)
            async with write_transaction(self._factory) as session:
                actor = require_lead_action(principal, chosen, await lock_lead(session, self._corp_id, lead_id))
                services = self._lead_services()
                outcome = await perform(
                    session, services, self._corp_id, lead_id, chosen, actor=actor, now=self._now(), given=given
                )
                lead = await lead_with_dealer(session, outcome.lead)
                if outcome.changed:  # who acted: the console user or the token's staff member
                    detail = {"action": chosen.value, "staff_userid": actor, "via": principal.via.value}
                    await audit.record(
                        session, self._corp_id, "lead.action", "lead", str(lead_id), detail, actor=principal.name
                    )
            if outcome.changed:
                log.info(
                    "lead action",
                    extra={"lead": lead_id, "action": chosen.value, "actor": actor, "principal": principal.name},
                )
            return web.json_response({"lead": lead, "changed": outcome.changed}, dumps=_dumps)

        return handle


def _lead_id(request: web.Request) -> int:
    text = request.match_info["lead_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise LeadActionError("not_found", f"线索 {text} 不存在", 404)
    return int(text)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body), at most ``MAX_BODY_BYTES`` and ``MAX_JSON_DEPTH`` deep;
    :class:`JsonRefused` for one nested deeper or holding what cannot be stored (NUL, NaN, …)."""
    try:
        raw = (await read_body(request, MAX_BODY_BYTES)).strip()
    except BodyTooLarge:
        raise LeadActionError("body_too_large", f"请求体超过 {MAX_BODY_BYTES} 字节", 413) from None
    if not raw:
        return {}
    check_json_depth(raw, MAX_JSON_DEPTH)  # before parsing: json.loads recurses per level
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # ValueError also covers an integer past Python's 4,300 digits
        raise LeadActionError("bad_json", "请求体不是有效的 JSON", 400) from None
    if not isinstance(body, dict):
        raise LeadActionError("bad_json", "请求体应为 JSON 对象", 400)
    require_storable(body)
    return body
