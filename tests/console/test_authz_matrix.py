"""The authorization matrix: every route of the application × every role (admin, operator, manager, advisor and
anonymous; session cookies and staff tokens) × a resource of the principal's own dealer and of another dealer →
the expected status. The routes are enumerated from the app's router, so a new route fails this test until it is
given its row here; only the public routes are exempt, by name.

``OK`` for a lead action means authorization let it through (the action's own answer: 200, or 400/409 for the
lead's state), never 401/403. Dealers: BJ001 (advisor a1, manager m1) is "own", SH001 (advisor s1) is "other"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import Role, Runtime
from bot.web.auth import CSRF_HEADER, SESSION_COOKIE, WebAuth
from scrm.models import AuditLog, LeadEvent, UserRole
from tests.conftest import make_settings
from tests.leads.action_support import CORP, add_lead, seed_network
from tests.web_support import add_user, mint, web_auth

EXEMPT = {  # public by design: WeCom's callbacks, customers' links, probes, and the login page itself
    ("*", "/wecom/callback"),
    ("GET", "/wecom/aibot"),
    ("POST", "/wecom/aibot"),
    ("GET", "/l/{token}"),
    ("GET", "/r/{token}"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
}


class Who(StrEnum):
    ADMIN = "admin (session)"
    OPERATOR = "operator (session)"
    OPERATOR_TOKEN = "operator (token)"
    MANAGER = "manager (session)"
    MANAGER_TOKEN = "manager (token)"
    ADVISOR_TOKEN = "advisor (token)"
    ANONYMOUS = "anonymous"


OK = "ok"  # a lead action let through by authorization
Expected = int | str
ALL = tuple(Who)


def row(
    default: tuple[Expected, Expected], **overrides: tuple[Expected, Expected]
) -> dict[Who, tuple[Expected, Expected]]:
    """(own dealer, other dealer) per principal: ``default`` unless overridden by the Who member's name."""
    table = dict.fromkeys(ALL, default)
    table.update({Who[name]: value for name, value in overrides.items()})
    if Who.ANONYMOUS.name not in overrides:
        table[Who.ANONYMOUS] = (401, 401) if default != (303, 303) else (303, 303)
    return table


WORK = row((403, 403), ADVISOR_TOKEN=(OK, 403))  # the lead's own advisor only
MANAGE = row((403, 403), MANAGER=(OK, 403), MANAGER_TOKEN=(OK, 403))
MATRIX: dict[tuple[str, str], dict[Who, tuple[Expected, Expected]]] = {
    ("GET", "/api/leads"): row((200, 200)),
    ("GET", "/api/leads/metrics"): row(
        (200, 200), MANAGER=(200, 403), MANAGER_TOKEN=(200, 403), ADVISOR_TOKEN=(403, 403)
    ),
    ("GET", "/api/leads/{lead_id}"): row(
        (200, 200), MANAGER=(200, 403), MANAGER_TOKEN=(200, 403), ADVISOR_TOKEN=(200, 403)
    ),
    ("POST", "/api/leads/{lead_id}/accept"): WORK,
    ("POST", "/api/leads/{lead_id}/contacted"): WORK,
    ("POST", "/api/leads/{lead_id}/test-drive"): WORK,
    ("POST", "/api/leads/{lead_id}/ordered"): WORK,
    ("POST", "/api/leads/{lead_id}/delivered"): WORK,
    ("POST", "/api/leads/{lead_id}/lost"): WORK,
    ("POST", "/api/leads/{lead_id}/lost/approve"): MANAGE,
    ("POST", "/api/leads/{lead_id}/lost/reject"): MANAGE,
    # whoever sees every lead may reassign, as a staff member (the admin here has no WeCom identity)
    ("POST", "/api/leads/{lead_id}/reassign"): row(
        (403, 403), OPERATOR=(OK, OK), OPERATOR_TOKEN=(OK, OK), MANAGER=(OK, 403), MANAGER_TOKEN=(OK, 403)
    ),
    ("POST", "/ingest/messages"): row((401, 401)),  # the ingest token only: neither sessions nor staff tokens
    ("POST", "/ingest/behaviours"): row((401, 401)),
    ("GET", "/console/"): row(
        (303, 303), ADMIN=(200, 200), OPERATOR=(200, 200), MANAGER=(200, 200), ANONYMOUS=(303, 303)
    ),
    ("GET", "/console"): row((303, 303)),
    ("POST", "/console/logout"): row((303, 303)),
    ("POST", "/console/sessions/revoke"): row((303, 303)),
}
BODIES: dict[str, dict[str, Any]] = {
    "test-drive": {"action": "book"},
    "lost": {"reason": "budget"},
    "lost/reject": {"note": "再跟进"},
}


@dataclass
class World:
    client: TestClient[web.Request, web.Application]
    runtime: Runtime
    auth: WebAuth
    users: dict[Who, int]
    leads: dict[bool, int]  # own dealer? → lead id


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    settings = make_settings(database_url=database_url, corp_id=CORP, ingest_token="i" * 32)
    app = create_app(settings, frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        runtime = app[RUNTIME_KEY]
        factory = runtime.session_factory
        net = await seed_network(factory)
        users = {
            Who.ADMIN: await add_user(factory, "root", UserRole.ADMIN.value, password=None),
            Who.OPERATOR: await add_user(factory, "ops", UserRole.OPERATOR.value, password=None, staff_userid="op"),
            Who.MANAGER: await add_user(
                factory, "wang", UserRole.MANAGER.value, password=None, dealer_code="BJ001", staff_userid="m1"
            ),
        }
        leads = {
            True: await add_lead(factory, "wmOWN", dealer_id=net.bj, advisor="a1"),
            False: await add_lead(factory, "wmOTHER", dealer_id=net.sh, advisor="s1"),
        }
        yield World(client, runtime, web_auth(settings, factory, runtime.now), users, leads)


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource}


async def _credentials(world: World, who: Who) -> dict[str, str]:
    """Fresh headers for ``who``: a new session (cookie + CSRF token) or a new staff token."""
    now = datetime.now(UTC)
    if who in world.users:
        session_id, _ = await world.auth.sessions.create(
            world.users[who], now=now, lifetime=timedelta(hours=1), user_agent="matrix", client_digest=""
        )
        cookie = f"{SESSION_COOKIE}={world.auth.cookie_value(session_id)}"
        return {"Cookie": cookie, CSRF_HEADER: world.auth.csrf_token(session_id)}
    staff = {Who.OPERATOR_TOKEN: "op", Who.MANAGER_TOKEN: "m1", Who.ADVISOR_TOKEN: "a1"}.get(who)
    if staff is None:
        return {}
    token = await mint(world.runtime.settings, world.runtime.session_factory, staff, now=now)
    return {"Authorization": f"Bearer {token.token}"}


async def _call(world: World, method: str, path: str, who: Who, own: bool) -> tuple[int, Any]:
    headers = await _credentials(world, who)
    url = path.replace("{lead_id}", str(world.leads[own]))
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
    if path == "/api/leads/metrics":
        kwargs["params"] = {"dealer": "BJ001" if own else "SH001"}
    elif method == "POST" and path.startswith("/console/"):
        kwargs["data"] = {"csrf_token": headers.get(CSRF_HEADER, "")}
    elif method == "POST" and path.startswith("/api/"):
        action = path.split("{lead_id}/", 1)[1]
        kwargs["json"] = BODIES.get(action) or (
            {"advisor_userid": "a2" if own else "s1"} if action == "reassign" else {}
        )
    elif method == "POST":
        kwargs["json"] = {"records": []}
    async with world.client.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


def test_every_route_has_a_row_or_is_public_by_name() -> None:
    settings = make_settings(
        public_url="https://scrm.example.com",
        ingest_token="i" * 32,
        aibot_token="aibot",
        aibot_aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    )
    routes = _routes(create_app(settings))
    assert routes - EXEMPT == set(MATRIX), "give every new route its row in MATRIX (or exempt it by name)"
    assert routes >= EXEMPT


@pytest.mark.parametrize("own", [True, False], ids=["own dealer", "other dealer"])
async def test_the_matrix(world: World, own: bool) -> None:
    seen: dict[tuple[str, str, Who], object] = {}
    for (method, path), expectations in MATRIX.items():
        for who in ALL:
            expected = expectations[who][0 if own else 1]
            status, body = await _call(world, method, path, who, own)
            if expected == OK:
                passed = status in (200, 400, 409) and (body or {}).get("error") not in ("forbidden", "unauthorized")
                seen[(method, path, who)] = OK if passed else (status, body)
            else:
                seen[(method, path, who)] = status
    wrong = {key: got for key, got in seen.items() if got != MATRIX[key[:2]][key[2]][0 if own else 1]}
    assert wrong == {}


async def test_a_cookie_post_without_its_csrf_token_is_refused(world: World) -> None:
    posts = sorted(path for method, path in MATRIX if method == "POST" and not path.startswith("/ingest/"))
    for path in posts:
        headers = await _credentials(world, Who.MANAGER)
        headers.pop(CSRF_HEADER)
        url = path.replace("{lead_id}", str(world.leads[True]))
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        kwargs["json" if path.startswith("/api/") else "data"] = BODIES.get(path.rsplit("/", 1)[-1], {})
        async with world.client.request("POST", url, **kwargs) as response:
            assert response.status == 403, path
    async with world.client.get("/console/", headers=await _credentials(world, Who.MANAGER)) as response:
        assert response.status == 200  # the sessions used above were not ended by the refused posts


async def test_lead_actions_record_who_acted(world: World) -> None:
    lead = world.leads[True]
    async with world.client.post(
        f"/api/leads/{lead}/lost", json={"reason": "budget"}, headers=await _credentials(world, Who.ADVISOR_TOKEN)
    ) as response:
        assert response.status == 200
    async with world.client.post(
        f"/api/leads/{lead}/lost/reject", json={"note": "再跟进"}, headers=await _credentials(world, Who.MANAGER)
    ) as response:
        assert response.status == 200
    async with world.runtime.session_factory() as session:
        rows = (
            await session.exec(select(AuditLog).where(AuditLog.action == "lead.action").order_by(col(AuditLog.id)))
        ).all()
        events = (await session.exec(select(LeadEvent.kind, LeadEvent.actor).where(LeadEvent.lead_id == lead))).all()
    assert [(r.actor, r.subject_id, r.detail) for r in rows] == [
        ("staff:a1", str(lead), {"action": "lost_request", "staff_userid": "a1", "via": "token"}),
        ("wang", str(lead), {"action": "lost_reject", "staff_userid": "m1", "via": "session"}),
    ]
    assert {("lost_requested", "a1"), ("lost_rejected", "m1")} <= {tuple(e) for e in events}
