"""send_welcome_msg: each WelcomeCode works once, within 20 s of the event (injected clock)."""

from __future__ import annotations

from bot.emulator.clock import ManualClock
from bot.emulator.state import EmulatorState
from tests.emulator.conftest import Api

WELCOME = {"text": {"content": "您好，我是您的专属顾问张伟"}}


async def test_code_works_once(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    fields = state.add_contact("zhangwei", name="李女士", state="L1~q~BJ001~zhangwei")
    code = fields["WelcomeCode"]
    clock.advance(19)
    assert (await api.call("externalcontact/send_welcome_msg", {"welcome_code": code, **WELCOME}))["errcode"] == 0
    second = await api.call("externalcontact/send_welcome_msg", {"welcome_code": code, **WELCOME})
    assert second["errcode"] == 41051
    assert state.counters.welcome_sends[code] == 1
    assert state.counters.welcome_rejections[code] == [41051]
    sent = state.counters.welcomes[0]
    assert (sent.userid, sent.external_userid) == ("zhangwei", fields["ExternalUserID"])


async def test_code_expires_after_20_seconds(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    late = state.add_contact("zhangwei", name="赵先生")["WelcomeCode"]
    clock.advance(20.5)
    assert (await api.call("externalcontact/send_welcome_msg", {"welcome_code": late, **WELCOME}))["errcode"] == 41051
    state.welcome_codes.expired_errcode = 41050
    later = state.add_contact("wangfang", name="钱先生")["WelcomeCode"]
    clock.advance(21)
    assert (await api.call("externalcontact/send_welcome_msg", {"welcome_code": later, **WELCOME}))["errcode"] == 41050
    assert state.counters.welcome_sends[late] == state.counters.welcome_sends[later] == 0


async def test_unknown_code_and_bad_requests(api: Api) -> None:
    assert (await api.call("externalcontact/send_welcome_msg", {"welcome_code": "WCNOPE", **WELCOME}))[
        "errcode"
    ] == 41050
    assert (await api.call("externalcontact/send_welcome_msg", {"welcome_code": "WCNOPE"}))["errcode"] == 40058
    ten = {"welcome_code": "WCNOPE", "attachments": [{"msgtype": "link"}] * 10}
    assert (await api.call("externalcontact/send_welcome_msg", ten))["errcode"] == 40058


def test_no_code_when_an_admin_welcome_is_configured(state: EmulatorState) -> None:
    state.staff["wangfang"].admin_welcome = True
    assert "WelcomeCode" not in state.add_contact("wangfang", name="孙女士")
    assert "WelcomeCode" in state.add_contact("zhangwei", name="孙女士")
    state.issue_welcome_codes = False
    assert "WelcomeCode" not in state.add_contact("zhangwei", name="周先生")
    assert "WelcomeCode" in state.add_contact("zhangwei", name="吴先生", welcome=True)
