"""The staff lead API through aiohttp's test client on both databases: every route, authentication (401), who sees
and does what (403), unknown leads (404), wrong states (409), bad input (400), oversized bodies (413), and the
mount on the edge role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.runtime.app import create_app
from bot.runtime.assembly import Role
from bot.web.leads_api import MAX_JSON_DEPTH, LeadsApi
from scrm.db import SessionFactory, write_transaction
from scrm.leads.services import LeadServices
from scrm.models import Lead
from tests.conftest import make_settings
from tests.leads.action_support import CORP, T0, Network, add_lead, events, get_lead, lead_services, seed_network
from tests.web_support import mint, web_auth

SETTINGS = make_settings(corp_id=CORP)
OTHER_KEY_SETTINGS = make_settings(corp_id=CORP, secret_key="another-deployment-secret-key-abcdefghijklmnopqrs")
USERIDS = ("a1", "a2", "m1", "s1", "m2", "op", "gone", "nobody")


async def tokens_for(factory: SessionFactory) -> dict[str, str]:
    """A token for every userid (inactive and unknown ones too), plus an expired and a forged one for a1."""
    tokens = {u: (await mint(SETTINGS, factory, u, now=T0)).token for u in USERIDS}
    expired = await mint(SETTINGS, factory, "a1", now=T0 - timedelta(days=2), lifetime=timedelta(days=1))
    tokens["expired"] = expired.token
    tokens["forged"] = (await mint(OTHER_KEY_SETTINGS, factory, "a1", now=T0)).token
    return tokens


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    factory: SessionFactory
    net: Network
    leads: dict[str, int]
    tokens: dict[str, str]

    async def call(self, method: str, path: str, userid: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[userid]}"} if userid else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            return response.status, await response.json()

    async def get(self, path: str, userid: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, userid, **kwargs)

    async def post(self, path: str, userid: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, userid, **kwargs)

    async def status(self, key: str) -> str:
        return (await get_lead(self.factory, self.leads[key])).status


def _app(factory: SessionFactory, now: datetime, services: LeadServices | None) -> web.Application:
    app = web.Application()
    LeadsApi(web_auth(SETTINGS, factory, lambda: now), leads=services).add_routes(app)
    return app


async def _client(factory: SessionFactory, services: LeadServices | None) -> TestClient[web.Request, web.Application]:
    return TestClient(TestServer(_app(factory, T0 + timedelta(minutes=1), services)))


@pytest.fixture
async def api(session_factory: SessionFactory) -> AsyncIterator[Api]:
    net = await seed_network(session_factory)
    leads = {
        "a1": await add_lead(session_factory, "wmA", dealer_id=net.bj, advisor="a1"),
        "a2": await add_lead(session_factory, "wmB", dealer_id=net.bj, advisor="a2"),
        "s1": await add_lead(session_factory, "wmS", dealer_id=net.sh, advisor="s1"),
        "pool": await add_lead(session_factory, "wmP", dealer_id=None, status="pool"),
        "done": await add_lead(session_factory, "wmD", dealer_id=net.bj, advisor="a1", status="delivered"),
    }
    async with write_transaction(session_factory) as session:
        lead = await session.get(Lead, leads["a1"])
        assert lead is not None
        lead.reasons, lead.asked = [{"code": "price", "points": 30}], "L7 落地多少钱？"
    tokens = await tokens_for(session_factory)
    async with await _client(session_factory, lead_services()) as client:
        yield Api(client, session_factory, net, leads, tokens)


async def test_requests_without_a_valid_token_are_refused(api: Api) -> None:
    lead = api.leads["a1"]
    tokens = api.tokens
    for header, message in (
        ("", "请先登录，或提供有效的访问令牌"),
        (f"Basic {tokens['a1']}", "缺少访问令牌（Authorization: Bearer …）"),
        (f"Bearer {tokens['forged']}", "访问令牌无效、已过期或已吊销，请重新获取"),
        (f"Bearer {tokens['expired']}", "访问令牌无效、已过期或已吊销，请重新获取"),
        (f"Bearer {tokens['gone']}", "成员 gone 不存在或已停用"),
        (f"Bearer {tokens['nobody']}", "成员 nobody 不存在或已停用"),
    ):
        for method, path in (
            ("GET", "/api/leads"),
            ("POST", f"/api/leads/{lead}/accept"),
            ("GET", "/api/leads/metrics"),
        ):
            headers = {"Authorization": header} if header else {}
            async with api.client.request(method, path, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="lianyi-leads"'
                assert await response.json() == {"error": "unauthorized", "message": message}
    assert await api.status("a1") == "assigned"


async def test_each_role_lists_the_leads_it_may_see(api: Api) -> None:
    async def ids(userid: str, query: str = "") -> list[int]:
        status, body = await api.get("/api/leads" + query, userid)
        assert status == 200
        return [lead["id"] for lead in body["leads"]]

    leads = api.leads
    assert await ids("a1") == [leads["a1"]]  # open leads only
    assert await ids("a1", "?status=delivered") == [leads["done"]]
    assert await ids("m1") == [leads["a2"], leads["a1"]]
    assert await ids("m2") == [leads["s1"]]
    assert await ids("op") == [leads["pool"], leads["s1"], leads["a2"], leads["a1"]]
    assert await ids("op", "?status=pool") == [leads["pool"]]
    status, body = await api.get("/api/leads", "a1")
    first = body["leads"][0]
    assert (first["status"], first["status_name"], first["dealer"]["code"], first["sla"]["phase"]) == (
        "assigned",
        "待接单",
        "BJ001",
        "accept",
    )
    status, body = await api.get("/api/leads?status=won", "op")
    assert (status, body["error"]) == (400, "bad_status")
    assert body["message"].startswith("状态 “won” 无效，可选：pool（公海）、waiting（待营业分配）、assigned（待接单）")


async def test_lead_detail_and_who_may_see_it(api: Api) -> None:
    path = f"/api/leads/{api.leads['a1']}"
    status, body = await api.get(path, "a1")
    assert status == 200
    assert body["contact"] == {
        "external_userid": "wmA",
        "name": "客户wmA",
        "score": 0,
        "level": "",
        "stage": "intent",
        "city": "",
    }
    assert (body["score"], body["level"], body["reasons"], body["asked"]) == (
        88,
        "H",
        [{"code": "price", "points": 30}],
        "L7 落地多少钱？",
    )
    assert [(e["kind"], e["to_status"]) for e in body["history"]] == [("assigned", "assigned")]
    for userid in ("m1", "op"):
        assert (await api.get(path, userid))[0] == 200
    for userid in ("a2", "m2", "s1"):
        assert await api.get(path, userid) == (403, {"error": "forbidden", "message": "您无权查看这条线索"})
    assert await api.get("/api/leads/999999", "op") == (404, {"error": "not_found", "message": "线索 999999 不存在"})
    assert await api.get("/api/leads/abc", "op") == (404, {"error": "not_found", "message": "线索 abc 不存在"})


async def test_the_advisor_works_a_lead_through_the_api(api: Api) -> None:
    base = f"/api/leads/{api.leads['a1']}"
    status, body = await api.post(base + "/accept", "a1")
    assert (status, body["changed"], body["lead"]["status"], body["lead"]["sla"]["phase"]) == (
        200,
        True,
        "accepted",
        "contact",
    )
    status, body = await api.post(base + "/accept", "a1")  # a retried request
    assert (status, body["changed"], body["lead"]["status"]) == (200, False, "accepted")
    assert await api.post(base + "/test-drive", "a1", json={"action": "done"}) == (
        409,
        {"error": "wrong_state", "message": "线索当前状态为「已接单」，不能标记为已到店试驾"},
    )
    steps: list[tuple[str, dict[str, str] | None, str]] = [
        ("/contacted", None, "contacted"),
        ("/test-drive", {"action": "book"}, "test_drive_booked"),
        ("/test-drive", {"action": "no_show"}, "test_drive_no_show"),
        ("/test-drive", {"action": "book"}, "test_drive_booked"),
        ("/test-drive", {"action": "done"}, "test_drive_done"),
        ("/ordered", None, "ordered"),
        ("/delivered", None, "delivered"),
    ]
    for suffix, payload, expected in steps:
        status, body = (
            await api.post(base + suffix, "a1", json=payload) if payload else await api.post(base + suffix, "a1")
        )
        assert (status, body["lead"]["status"]) == (200, expected), suffix
    assert body["lead"]["closed_at"] == (T0 + timedelta(minutes=1)).isoformat()
    other = f"/api/leads/{api.leads['a2']}"
    assert await api.post(other + "/accept", "a1") == (
        403,
        {"error": "forbidden", "message": "这条线索不是您负责的，不能操作"},
    )
    assert await api.post("/api/leads/999999/accept", "a1") == (
        404,
        {"error": "not_found", "message": "线索 999999 不存在"},
    )


async def test_bad_bodies_are_refused(api: Api) -> None:
    base = f"/api/leads/{api.leads['a1']}"
    bad_action = {"error": "bad_request", "message": "action 应为 book（预约）、done（已到店）或 no_show（未到店）"}
    assert await api.post(base + "/test-drive", "a1", json={"action": "later"}) == (400, bad_action)
    assert await api.post(base + "/test-drive", "a1") == (400, {"error": "bad_request", "message": "缺少字段 action"})
    assert await api.post(base + "/lost", "a1", json={"reason": 5}) == (
        400,
        {"error": "bad_request", "message": "字段 reason 应为文字"},
    )
    assert await api.post(base + "/lost", "a1", data=b"{not json") == (
        400,
        {"error": "bad_json", "message": "请求体不是有效的 JSON"},
    )
    assert await api.post(base + "/lost", "a1", json=["budget"]) == (
        400,
        {"error": "bad_json", "message": "请求体应为 JSON 对象"},
    )
    huge = {"reason": "other", "note": "x" * (64 * 1024)}
    assert await api.post(base + "/lost", "a1", json=huge) == (
        413,
        {"error": "body_too_large", "message": "请求体超过 65536 字节"},
    )
    status, body = await api.post(base + "/lost", "a1", json={"reason": "far"})
    assert (status, body["error"]) == (400, "bad_reason")
    assert "无效线索（空号、同行、误加）（fake）" in body["message"]
    assert await api.status("a1") == "assigned"


@pytest.mark.parametrize("route", ["accept", "test-drive", "lost", "lost/reject", "reassign"])
async def test_json_nested_too_deep_is_400_before_parsing_and_changes_nothing(api: Api, route: str) -> None:
    lead = api.leads["a1"]
    history = len(await events(api.factory, lead))
    over = b'{"action": "book", "reason": "budget", "x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    for body, depth in (
        (b"[" * 2000 + b"]" * 2000, 2000),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, 2000),
        (b"{" * 2000, 2000),
        (over, MAX_JSON_DEPTH + 1),
    ):
        assert await api.post(f"/api/leads/{lead}/{route}", "a1", data=body) == (
            400,
            {
                "error": "json_too_deep",
                "message": f"JSON 嵌套过深：{depth} 层，最多 {MAX_JSON_DEPTH} 层",
                "message_en": f"body nests JSON {depth} deep; at most {MAX_JSON_DEPTH} levels are accepted",
            },
        )
    huge_number = b'{"action": "book", "n": ' + b"9" * 5000 + b"}"
    assert await api.post(f"/api/leads/{lead}/{route}", "a1", data=huge_number) == (
        400,
        {"error": "bad_json", "message": "请求体不是有效的 JSON"},
    )
    nul, nan = b'{"action": "book", "reason": "budget", "note": "a\\u0000"}', b'{"action": "book", "n": NaN}'
    for body, what in (
        (nul, "a string with a NUL character or a lone surrogate"),
        (nan, "a number that is NaN or infinite"),
    ):
        status, answer = await api.post(f"/api/leads/{lead}/{route}", "a1", data=body)
        assert (status, answer["error"], answer["message_en"]) == (400, "unstorable_json", f"body holds {what}")
    assert (await api.status("a1"), len(await events(api.factory, lead))) == ("assigned", history)


async def test_json_at_the_depth_limit_is_accepted(api: Api) -> None:
    inner = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)  # inside the body object: MAX_JSON_DEPTH in all
    base = f"/api/leads/{api.leads['a1']}"
    assert (await api.post(base + "/accept", "a1", data=f'{{"x": {inner}}}'))[0] == 200
    status, body = await api.post(base + "/test-drive", "a1", data=f'{{"action": "book", "x": {inner}}}')
    assert (status, body["lead"]["status"]) == (200, "test_drive_booked")


async def test_lost_request_approval_and_rejection(api: Api) -> None:
    one, two = f"/api/leads/{api.leads['a1']}", f"/api/leads/{api.leads['a2']}"
    status, body = await api.post(one + "/lost", "a1", json={"reason": "budget", "note": "预算不够"})
    assert (status, body["lead"]["status"], body["lead"]["lost_reason_name"]) == (200, "lost_pending", "预算不足")
    for userid in ("a1", "m2", "op"):
        assert await api.post(one + "/lost/approve", userid) == (
            403,
            {"error": "forbidden", "message": "只有该线索所属门店的经理才能执行此操作"},
        )
    status, body = await api.post(one + "/lost/approve", "m1")
    assert (status, body["lead"]["status"], body["changed"]) == (200, "lost", True)
    assert (await api.post(one + "/lost/approve", "m1"))[1]["changed"] is False
    assert await api.post(one + "/lost/reject", "m1", json={"note": "x"}) == (
        409,
        {"error": "wrong_state", "message": "线索当前状态为「已战败」，不能驳回战败申请"},
    )
    await api.post(two + "/lost", "a2", json={"reason": "unreachable"})
    assert (await api.post(two + "/lost/reject", "m1", json={"note": 3}))[0] == 400
    status, body = await api.post(two + "/lost/reject", "m1", json={"note": "再联系一次"})
    assert (status, body["lead"]["status"], body["lead"]["lost_reason"]) == (200, "assigned", "")


async def test_managers_and_operators_reassign(api: Api) -> None:
    one, pool = f"/api/leads/{api.leads['a1']}", f"/api/leads/{api.leads['pool']}"
    status, body = await api.post(one + "/reassign", "m1", json={"advisor_userid": "a2"})
    assert (status, body["lead"]["advisor_userid"], body["lead"]["status"]) == (200, "a2", "assigned")
    assert (await api.post(one + "/reassign", "a1", json={"advisor_userid": "a1"}))[0] == 403
    assert await api.post(one + "/reassign", "m1", json={"advisor_userid": "s1"}) == (
        400,
        {"error": "bad_advisor", "message": "成员 s1 不属于您的门店，不能接这条线索"},
    )
    status, body = await api.post(pool + "/reassign", "op", json={"advisor_userid": "s1"})
    assert (status, body["lead"]["advisor_userid"], body["lead"]["dealer"]["code"]) == (200, "s1", "SH001")


async def test_metrics_by_role(api: Api) -> None:
    status, body = await api.get("/api/leads/metrics?since=2026-03-01&until=2026-03-02", "m1")
    assert (status, body["leads"], body["by_status"]) == (200, 3, {"assigned": 2, "delivered": 1})
    status, body = await api.get("/api/leads/metrics?since=2026-03-01&until=2026-03-02", "op")
    assert (status, body["leads"]) == (200, 5)
    status, body = await api.get("/api/leads/metrics?since=2026-03-01&until=2026-03-02&dealer=SH001", "op")
    assert (status, body["by_status"]) == (200, {"assigned": 1})
    status, body = await api.get("/api/leads/metrics?since=2026-03-03&until=2026-03-09", "op")
    assert (status, body["leads"]) == (200, 0)
    status, body = await api.get("/api/leads/metrics", "op")  # the last 30 days up to the API's clock
    assert (status, body["leads"], body["since"]) == (200, 5, "2026-02-01T00:00:00+08:00")
    assert await api.get("/api/leads/metrics", "a1") == (
        403,
        {"error": "forbidden", "message": "只有门店经理和运营可以查看线索报表"},
    )
    assert await api.get("/api/leads/metrics?dealer=XX1", "op") == (
        400,
        {"error": "bad_dealer", "message": "门店代码 XX1 不存在"},
    )
    assert await api.get("/api/leads/metrics?since=03-01", "op") == (
        400,
        {"error": "bad_date", "message": "日期格式应为 YYYY-MM-DD，例如 2026-03-01"},
    )


async def test_without_lead_services_actions_answer_503(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj)
    tokens = await tokens_for(session_factory)
    async with await _client(session_factory, None) as client:
        headers = {"Authorization": f"Bearer {tokens['a1']}"}
        async with client.post(f"/api/leads/{lead_id}/accept", headers=headers) as response:
            assert (response.status, await response.json()) == (
                503,
                {"error": "unavailable", "message": "线索模块未启用"},
            )
        async with client.get("/api/leads", headers=headers) as response:
            assert response.status == 200  # reading needs no rules
    assert (await get_lead(session_factory, lead_id)).status == "assigned"


def test_the_api_is_mounted_on_the_edge_role() -> None:
    def paths(roles: frozenset[Role]) -> set[str]:
        app = create_app(SETTINGS, roles)
        return {resource.canonical for resource in app.router.resources()}

    assert {"/api/leads", "/api/leads/metrics", "/api/leads/{lead_id}", "/api/leads/{lead_id}/lost/approve"} <= paths(
        frozenset({Role.EDGE})
    )
    assert not any(p.startswith("/api/leads") for p in paths(frozenset({Role.WORKER})))
