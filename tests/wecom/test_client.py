"""The WeCom client against a real HTTP fake of the API: tokens, errcodes, backoff, member limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from bot.wecom.client import WeComClient, build_wecom_client
from bot.wecom.errors import CredentialError, FatalError, RateLimitedError, RetryableError, TokenError, WeComError
from tests.conftest import make_settings
from tests.wecom.backends import Backend
from tests.wecom.fake_api import EXT, HttpStatus, RunningFake, Stall

GETTOKEN = "/cgi-bin/gettoken"
USER_GET = "/cgi-bin/user/get"
WELCOME = f"{EXT}/send_welcome_msg"
MESSAGE = "/cgi-bin/message/send"


async def test_one_token_refresh_under_fifty_concurrent_calls(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session)
    await asyncio.gather(*(client.get_user(f"u{i}") for i in range(50)))
    assert fake_wecom.state.calls[GETTOKEN] == 1
    assert fake_wecom.state.ok_calls(USER_GET) == 50


@pytest.mark.parametrize("errcode", [40014, 42001])
async def test_rejected_token_is_refreshed_once_and_the_call_retried(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession, errcode: int
) -> None:
    client = backend.client(fake_wecom, http_session)
    await client.get_user("u1")
    if errcode == 40014:
        fake_wecom.state.invalidate_tokens()
    else:
        fake_wecom.state.expire_tokens()
    await client.get_user("u2")
    answered = [r.errcode for r in fake_wecom.state.requests if r.path == USER_GET]
    assert answered == [0, errcode, 0]
    assert fake_wecom.state.calls[GETTOKEN] == 2


async def test_a_token_refused_twice_raises_instead_of_looping(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session)
    fake_wecom.state.script(USER_GET, 40014, 40014, 40014)
    with pytest.raises(TokenError) as info:
        await client.get_user("u1")
    assert info.value.errcode == 40014
    assert fake_wecom.state.calls[USER_GET] == 2
    assert fake_wecom.state.calls[GETTOKEN] == 2


async def test_expired_token_is_replaced_before_wecom_refuses_it(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session)
    await client.get_user("u1")
    backend.clock.advance(7200 - 299)  # inside the 300 s safety margin, still valid at WeCom
    await client.get_user("u2")
    assert fake_wecom.state.calls[GETTOKEN] == 2
    assert {r.errcode for r in fake_wecom.state.requests} == {0}


async def test_bad_secret_fails_fast_without_a_gettoken_loop(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session, secret="wrong-secret")
    results = await asyncio.gather(*(client.get_user(f"u{i}") for i in range(50)), return_exceptions=True)
    assert all(isinstance(r, CredentialError) and r.errcode == 40001 for r in results)
    assert fake_wecom.state.calls[GETTOKEN] == 1
    assert fake_wecom.state.calls[USER_GET] == 0


ERRCODE_CLASSES: list[tuple[int, type[WeComError]]] = [
    (-1, RetryableError),
    (41096, RetryableError),
    (41063, RetryableError),
    (45009, RateLimitedError),
    (45033, RateLimitedError),
    (41001, TokenError),
    (48002, FatalError),
    (60020, FatalError),
    (60011, FatalError),
    (84061, FatalError),
    (41051, FatalError),
    (41050, FatalError),
    (40096, FatalError),
    (40068, FatalError),
    (40128, FatalError),
    (40129, FatalError),
    (81013, FatalError),
    (95001, FatalError),
    (987654, FatalError),  # unknown codes are never retried
]


@pytest.mark.parametrize(("errcode", "expected"), ERRCODE_CLASSES)
async def test_errcodes_raise_their_class(
    memory_backend: Backend,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    errcode: int,
    expected: type[WeComError],
) -> None:
    client = memory_backend.client(fake_wecom, http_session)
    fake_wecom.state.script(WELCOME, *([errcode] * 2))  # a token error gets its one retry
    with pytest.raises(WeComError) as info:
        await client.send_welcome_msg("code-1", {"content": "您好"})
    assert type(info.value) is expected
    assert (info.value.errcode, info.value.api) == (errcode, WELCOME)
    assert fake_wecom.state.welcome_sends["code-1"] == 0


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (HttpStatus(502), RetryableError),
        (HttpStatus(503), RetryableError),
        (HttpStatus(429), RateLimitedError),
        (HttpStatus(403), FatalError),
    ],
)
async def test_http_errors_have_their_class(
    memory_backend: Backend,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    fault: HttpStatus,
    expected: type[WeComError],
) -> None:
    client = memory_backend.client(fake_wecom, http_session)
    fake_wecom.state.script(USER_GET, fault)
    with pytest.raises(WeComError) as info:
        await client.get_user("u1")
    assert type(info.value) is expected
    assert info.value.errcode is None
    assert str(fault.status) in info.value.errmsg


async def test_a_call_that_gets_no_answer_times_out_as_retryable(
    memory_backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = memory_backend.client(fake_wecom, http_session, timeout=0.2)
    await client.get_user("warm-up")  # the token fetch is not what stalls
    fake_wecom.state.script(USER_GET, Stall())
    with pytest.raises(RetryableError) as info:
        await client.get_user("u1")
    assert "Timeout" in info.value.errmsg


async def test_45009_blocks_the_api_for_sixty_seconds_in_every_process(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session)
    fake_wecom.state.script(WELCOME, 45009)
    with pytest.raises(RateLimitedError) as info:
        await client.send_welcome_msg("code-1", {"content": "您好"})
    assert info.value.retry_after is not None and info.value.retry_after >= 60
    blocked_at = backend.clock.now()

    if backend.redis is not None:  # a second process sharing Redis backs off too
        assert await backend.limiter().blocked_for(WELCOME) >= 59.9
    with pytest.raises(RateLimitedError), client.deadline(backend.clock.now() + 5):
        await client.send_welcome_msg("code-2", {"content": "您好"})
    assert fake_wecom.state.calls[WELCOME] == 1  # nothing was sent during the block

    await client.send_welcome_msg("code-2", {"content": "您好"})  # waits out the block (fake sleep)
    sent = [r for r in fake_wecom.state.requests if r.path == WELCOME and r.errcode == 0]
    assert len(sent) == 1 and sent[0].at >= blocked_at + 60
    assert max(backend.clock.sleeps) >= 59.9
    await client.get_user("u1")  # other APIs were never blocked


async def test_member_limit_holds_back_the_31st_message_instead_of_dropping_it(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session, member_messages_per_minute=30)
    start = backend.clock.now()
    for i in range(31):
        await client.send_app_message({"touser": "zhangsan", "msgtype": "text", "text": {"content": f"线索 {i}"}})
    state = fake_wecom.state
    assert len(state.delivered["zhangsan"]) == 31
    assert state.dropped["zhangsan"] == 0
    assert state.delivered["zhangsan"][-1] >= start + 60
    bodies = [r.body for r in state.requests if r.path == MESSAGE]
    assert all(body["agentid"] == 1000002 for body in bodies)


async def test_member_limit_past_the_callers_deadline_raises_before_sending(
    backend: Backend, fake_wecom: RunningFake, http_session: aiohttp.ClientSession
) -> None:
    client = backend.client(fake_wecom, http_session, member_messages_per_minute=2)
    for _ in range(2):
        await client.send_app_message({"touser": "lisi", "msgtype": "text", "text": {"content": "hi"}})
    with pytest.raises(RateLimitedError) as info, client.deadline(backend.clock.now() + 10):
        await client.send_app_message({"touser": "wangwu|lisi", "msgtype": "text", "text": {"content": "hi"}})
    assert info.value.retry_after == pytest.approx(60.0)
    assert fake_wecom.state.calls[MESSAGE] == 2
    assert fake_wecom.state.delivered["wangwu"] == []  # all-or-nothing: wangwu's slot was not spent either


Helper = Callable[[WeComClient], Awaitable[dict[str, Any]]]

HELPERS: list[tuple[str, Helper, str, str, dict[str, Any]]] = [
    ("follow_users", lambda c: c.get_follow_user_list(), "GET", f"{EXT}/get_follow_user_list", {}),
    ("user", lambda c: c.get_user("zhangsan"), "GET", USER_GET, {"userid": "zhangsan"}),
    ("list", lambda c: c.list_external_contacts("zhangsan"), "GET", f"{EXT}/list", {"userid": "zhangsan"}),
    (
        "batch",
        lambda c: c.batch_get_by_user(["a", "b"], "cur", 50),
        "POST",
        f"{EXT}/batch/get_by_user",
        {"userid_list": ["a", "b"], "cursor": "cur", "limit": 50},
    ),
    (
        "remark",
        lambda c: c.remark("u", "wm1", remark="王先生", remark_mobiles=["13800000000"]),
        "POST",
        f"{EXT}/remark",
        {"userid": "u", "external_userid": "wm1", "remark": "王先生", "remark_mobiles": ["13800000000"]},
    ),
    (
        "mark_tag",
        lambda c: c.mark_tag("u", "wm1", ["t1"], None),
        "POST",
        f"{EXT}/mark_tag",
        {"userid": "u", "external_userid": "wm1", "add_tag": ["t1"], "remove_tag": []},
    ),
    ("tags", lambda c: c.get_corp_tag_list(group_id=["g1"]), "POST", f"{EXT}/get_corp_tag_list", {"group_id": ["g1"]}),
    (
        "add_tag",
        lambda c: c.add_corp_tag([{"name": "意向"}], group_name="线索"),
        "POST",
        f"{EXT}/add_corp_tag",
        {"group_name": "线索", "tag": [{"name": "意向"}]},
    ),
    (
        "edit_tag",
        lambda c: c.edit_corp_tag("t1", name="高意向"),
        "POST",
        f"{EXT}/edit_corp_tag",
        {"id": "t1", "name": "高意向"},
    ),
    ("del_tag", lambda c: c.del_corp_tag(tag_id=["t1"]), "POST", f"{EXT}/del_corp_tag", {"tag_id": ["t1"]}),
    (
        "groups",
        lambda c: c.groupchat_list("", 100, 0),
        "POST",
        f"{EXT}/groupchat/list",
        {"status_filter": 0, "cursor": "", "limit": 100},
    ),
    (
        "contact_way",
        lambda c: c.add_contact_way(type=1, scene=2, state="d01a02", user=["zhangsan"]),
        "POST",
        f"{EXT}/add_contact_way",
        {"type": 1, "scene": 2, "state": "d01a02", "user": ["zhangsan"], "skip_verify": True},
    ),
]


@pytest.mark.parametrize(("helper", "method", "path", "sent"), [h[1:] for h in HELPERS], ids=[h[0] for h in HELPERS])
async def test_typed_helpers_call_the_documented_api(
    memory_backend: Backend,
    fake_wecom: RunningFake,
    http_session: aiohttp.ClientSession,
    helper: Helper,
    method: str,
    path: str,
    sent: dict[str, Any],
) -> None:
    client = memory_backend.client(fake_wecom, http_session)
    assert (await helper(client))["errcode"] == 0
    request = [r for r in fake_wecom.state.requests if r.path == path][-1]
    assert request.method == method
    received = request.body if method == "POST" else {k: v for k, v in request.params.items() if k != "access_token"}
    assert received == sent


async def test_build_wecom_client_picks_the_backends_from_redis(
    fake_wecom: RunningFake, http_session: aiohttp.ClientSession, redis_backend: Backend
) -> None:
    settings: Settings = make_settings(wecom_api_base=fake_wecom.base_url, redis_prefix=redis_backend.keys.prefix)
    assert redis_backend.redis is not None
    for redis in (None, redis_backend.redis):
        client = build_wecom_client(settings, http_session, redis, clock=redis_backend.clock.now)
        await client.get_user("u1")
    assert fake_wecom.state.calls[GETTOKEN] == 2  # one per backend: in-process, then Redis
    cached = await redis_backend.redis.keys(f"{redis_backend.keys.prefix}:wecom:token:*")
    assert len(cached) == 1
