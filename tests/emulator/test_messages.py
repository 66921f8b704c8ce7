"""message/send: WeCom silently drops more than 30 a minute / 1000 an hour per member — and we count it."""

from __future__ import annotations

from bot.emulator.clock import ManualClock
from bot.emulator.limits import MemberMessageQuota
from bot.emulator.state import EmulatorState
from tests.emulator.conftest import AGENT_ID, Api


def _text(touser: str, content: str, **extra: object) -> dict[str, object]:
    return {"touser": touser, "msgtype": "text", "agentid": AGENT_ID, "text": {"content": content}, **extra}


async def test_drops_over_30_a_minute_are_silent_but_counted(
    api: Api, state: EmulatorState, clock: ManualClock
) -> None:
    for n in range(35):
        result = await api.call("message/send", _text("zhangwei|wangfang" if n < 3 else "zhangwei", f"线索 {n}"))
        assert result["errcode"] == 0 and result["invaliduser"] == ""
        clock.advance(1)
    assert state.counters.messages_delivered["zhangwei"] == 30
    assert state.counters.messages_dropped["zhangwei"] == 5
    assert state.counters.messages_delivered["wangfang"] == 3
    assert state.counters.messages_dropped["wangfang"] == 0
    clock.advance(60)
    assert (await api.call("message/send", _text("zhangwei", "新线索")))["errcode"] == 0
    assert state.counters.messages_delivered["zhangwei"] == 31
    delivered = [m for m in state.counters.app_messages if m.touser == "zhangwei"]
    assert delivered[-1].body["text"] == {"content": "新线索"}


def test_hour_quota_of_1000() -> None:
    quota = MemberMessageQuota()
    now = 0.0
    admitted = 0
    for _ in range(40):  # 40 minutes of 30 messages each
        admitted += sum(quota.admit("zhangwei", now + i) for i in range(30))
        now += 60
    assert admitted == 1000
    assert quota.admit("zhangwei", 3600.0 + 1)  # the first minute left the hour window


async def test_invalid_users_and_agent(api: Api) -> None:
    mixed = await api.call("message/send", _text("zhangwei|ghost|nobody", "hi"))
    assert mixed["errcode"] == 0 and mixed["invaliduser"] == "ghost|nobody" and mixed["msgid"]
    assert (await api.call("message/send", _text("ghost", "hi")))["errcode"] == 81013
    assert (await api.call("message/send", {**_text("zhangwei", "hi"), "agentid": 1}))["errcode"] == 40056
    assert (await api.call("message/send", {**_text("zhangwei", "hi"), "msgtype": "fax"}))["errcode"] == 40008


async def test_duplicate_check(api: Api, state: EmulatorState, clock: ManualClock) -> None:
    body = _text("wangfang", "同一条", enable_duplicate_check=1, duplicate_check_interval=600)
    for _ in range(3):
        assert (await api.call("message/send", body))["errcode"] == 0
    assert state.counters.messages_delivered["wangfang"] == 1
    assert state.counters.messages_duplicate["wangfang"] == 2
    clock.advance(601)
    await api.call("message/send", body)
    assert state.counters.messages_delivered["wangfang"] == 2
