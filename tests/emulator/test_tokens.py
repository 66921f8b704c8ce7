"""Token lifecycle: gettoken, reuse, expiry (42001), early invalidation (40014), missing (41001)."""

from __future__ import annotations

from bot.emulator.clock import ManualClock
from bot.emulator.state import EmulatorState
from tests.emulator.conftest import NO_CONTACT_SECRET, Api


async def test_gettoken_issues_one_token_per_secret_until_it_expires(api: Api, clock: ManualClock) -> None:
    first = await api.gettoken()
    assert first["errcode"] == 0 and first["expires_in"] == 7200
    clock.advance(100)
    again = await api.gettoken()
    assert again["access_token"] == first["access_token"] and again["expires_in"] == 7100
    other = await api.gettoken(NO_CONTACT_SECRET)
    assert other["access_token"] != first["access_token"]
    clock.advance(7100)
    renewed = await api.gettoken()
    assert renewed["access_token"] != first["access_token"] and renewed["expires_in"] == 7200


async def test_gettoken_rejects_bad_secret_and_corp(api: Api) -> None:
    assert (await api.gettoken("wrong-secret"))["errcode"] == 40001
    assert (await api.gettoken(corp_id="ww0000000000000000"))["errcode"] == 40013


async def test_token_errors(api: Api, clock: ManualClock, state: EmulatorState) -> None:
    assert (await api.raw("GET", "user/get", params={"userid": "zhangwei"}))["errcode"] == 41001
    bogus = await api.raw("GET", "user/get", params={"userid": "zhangwei", "access_token": "nope"})
    assert bogus["errcode"] == 40014
    ok = await api.call("user/get", userid="zhangwei")
    assert ok["errcode"] == 0 and ok["name"] == "张伟"
    clock.advance(7200)
    assert (await api.call("user/get", userid="zhangwei"))["errcode"] == 42001
    api.token = ""
    assert (await api.call("user/get", userid="zhangwei"))["errcode"] == 0
    assert state.invalidate_all_tokens() == 1
    assert (await api.call("user/get", userid="zhangwei"))["errcode"] == 40014
    api.token = ""
    assert (await api.call("user/get", userid="zhangwei"))["errcode"] == 0
    assert state.tokens.issued == 3


async def test_contact_api_needs_an_allowed_app(api: Api) -> None:
    other = Api(api.http, api.base_url, NO_CONTACT_SECRET)
    assert (await other.call("externalcontact/get_follow_user_list"))["errcode"] == 48002
    assert (await other.call("user/get", userid="zhangwei"))["errcode"] == 0
    follow = await api.call("externalcontact/get_follow_user_list")
    assert follow["follow_user"] == ["zhangwei", "wangfang"]


async def test_counts_calls_per_api(api: Api, state: EmulatorState) -> None:
    for _ in range(3):
        await api.call("user/get", userid="nobody")
    assert state.counters.api_calls["user/get"] == 3
    assert state.counters.api_calls["gettoken"] == 1
    assert state.counters.api_errors[("user/get", 60111)] == 3


async def test_bad_json_body_is_47001(api: Api) -> None:
    await api.call("user/get", userid="zhangwei")
    url = f"{api.base_url}/cgi-bin/externalcontact/mark_tag"
    async with api.http.post(url, params={"access_token": api.token}, data=b"{not json") as response:
        assert (await response.json())["errcode"] == 47001
