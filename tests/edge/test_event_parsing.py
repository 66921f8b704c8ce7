"""Every ChangeType of PROTOCOL.md, from decrypted XML through parse_xml_fields to the right event class."""

from __future__ import annotations

import pytest

from bot.edge import events as ev
from bot.edge.xmlparse import parse_xml_fields
from tests.edge.wecom_callbacks import inner_xml

CORP = "wx5823bf96d3bd56c7"


def _callback(event: str, change_type: str, **fields: str | list[str]) -> str:
    base: dict[str, str | list[str]] = {
        "ToUserName": CORP,
        "FromUserName": "sys",
        "CreateTime": "1760000000",
        "MsgType": "event",
        "Event": event,
        "ChangeType": change_type,
    }
    base.update(fields)
    return inner_xml(base)


CONTACT = {"UserID": "zhangsan", "ExternalUserID": "wmEXT001"}

CASES: list[tuple[str, type[ev.WeComEvent], dict[str, object]]] = [
    (
        _callback("change_external_contact", "add_external_contact", **CONTACT, State="ad01-d42", WelcomeCode="WC1"),
        ev.ContactAdded,
        {"userid": "zhangsan", "external_userid": "wmEXT001", "state": "ad01-d42", "welcome_code": "WC1"},
    ),
    (
        _callback("change_external_contact", "add_half_external_contact", **CONTACT, State="s", WelcomeCode="W"),
        ev.ContactHalfAdded,
        {"external_userid": "wmEXT001", "state": "s", "welcome_code": "W"},
    ),
    (
        _callback("change_external_contact", "edit_external_contact", **CONTACT),
        ev.ContactEdited,
        {"userid": "zhangsan", "external_userid": "wmEXT001"},
    ),
    (
        _callback("change_external_contact", "del_external_contact", **CONTACT, Source="DELETE_BY_TRANSFER"),
        ev.ContactDeletedByStaff,
        {"external_userid": "wmEXT001", "source": "DELETE_BY_TRANSFER"},
    ),
    (
        _callback("change_external_contact", "del_follow_user", **CONTACT),
        ev.StaffDeletedByContact,
        {"userid": "zhangsan", "external_userid": "wmEXT001"},
    ),
    (
        _callback("change_external_contact", "transfer_fail", **CONTACT, FailReason="customer_refused"),
        ev.TransferFailed,
        {"userid": "zhangsan", "fail_reason": "customer_refused"},
    ),
    (_callback("change_external_chat", "create", ChatId="wrCHAT1"), ev.GroupCreated, {"chat_id": "wrCHAT1"}),
    (_callback("change_external_chat", "dismiss", ChatId="wrCHAT1"), ev.GroupDismissed, {"chat_id": "wrCHAT1"}),
    (
        _callback(
            "change_external_chat",
            "update",
            ChatId="wrCHAT1",
            UpdateDetail="add_member",
            JoinScene="3",
            MemChangeCnt="1",
            MemChangeList=["wmEXT001"],
            LastMemVer="v1",
            CurMemVer="v2",
        ),
        ev.GroupUpdated,
        {
            "chat_id": "wrCHAT1",
            "update_detail": "add_member",
            "join_scene": 3,
            "mem_change_cnt": 1,
            "mem_change_list": ("wmEXT001",),
            "last_mem_ver": "v1",
            "cur_mem_ver": "v2",
        },
    ),
    (
        _callback("change_external_tag", "create", Id="etTAG1", TagType="tag"),
        ev.TagCreated,
        {"tag_id": "etTAG1", "tag_type": "tag", "strategy_id": None},
    ),
    (
        _callback("change_external_tag", "update", Id="etGROUP1", TagType="tag_group", StrategyId="7"),
        ev.TagUpdated,
        {"tag_id": "etGROUP1", "tag_type": "tag_group", "strategy_id": 7},
    ),
    (_callback("change_external_tag", "delete", Id="etTAG1", TagType="tag"), ev.TagDeleted, {"tag_id": "etTAG1"}),
    (_callback("change_external_tag", "shuffle", Id="", StrategyId="7"), ev.TagShuffled, {"tag_id": ""}),
]


@pytest.mark.parametrize(("document", "cls", "attributes"), CASES, ids=[f"{c[1].__name__}" for c in CASES])
def test_change_type_builds_the_right_event(
    document: str, cls: type[ev.WeComEvent], attributes: dict[str, object]
) -> None:
    event = ev.parse_event(parse_xml_fields(document))
    assert type(event) is cls
    assert event.corp_id == CORP
    assert event.create_time == 1760000000
    for name, value in attributes.items():
        assert getattr(event, name) == value, name
    # The payload the inbox stores rebuilds the identical event in the worker.
    rebuilt = ev.parse_event(event.to_payload())
    assert type(rebuilt) is cls
    assert rebuilt.dedup_key == event.dedup_key
    assert rebuilt.ordering_key == event.ordering_key


def test_every_change_type_of_the_protocol_is_covered() -> None:
    covered = {cls.event_type for _, cls, _ in CASES}
    modelled = set(ev.known_event_types()) - {"unknown", "message.app", "kf.msg_or_event"}
    assert covered == modelled


def test_group_update_with_one_member_keeps_a_list() -> None:
    doc = _callback("change_external_chat", "update", ChatId="wr1", UpdateDetail="del_member", MemChangeList=["wmA"])
    event = ev.parse_event(parse_xml_fields(doc))
    assert isinstance(event, ev.GroupUpdated)
    assert event.mem_change_list == ("wmA",)
    assert event.to_payload()["MemChangeList"] == ["wmA"]


def test_unmodelled_change_type_is_unknown_not_dropped() -> None:
    doc = _callback("change_external_contact", "msg_audit_approved", UserID="u")
    event = ev.parse_event(parse_xml_fields(doc))
    assert isinstance(event, ev.UnknownEvent)
    assert (event.msg_type, event.event, event.change_type) == (
        "event",
        "change_external_contact",
        "msg_audit_approved",
    )
