"""Decrypted callback fields as the edge stores them, and the inbox items the edge would build from them."""

from __future__ import annotations

from typing import Any

from bot.edge.events import parse_event
from bot.inbox.base import InboxItem
from tests.conftest import TEST_CORP_ID


def contact_added(external_userid: str, seq: int, *, userid: str = "zhangsan") -> dict[str, Any]:
    """An add_external_contact callback; ``seq`` goes into State and CreateTime, so it is a distinct event."""
    return {
        "ToUserName": TEST_CORP_ID,
        "FromUserName": "sys",
        "CreateTime": str(1_700_000_000 + seq),
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": "add_external_contact",
        "UserID": userid,
        "ExternalUserID": external_userid,
        "State": f"seq{seq}",
        "WelcomeCode": f"wc-{external_userid}-{seq}",
    }


def group_created(chat_id: str) -> dict[str, Any]:
    return {
        "ToUserName": TEST_CORP_ID,
        "FromUserName": "sys",
        "CreateTime": "1700000100",
        "MsgType": "event",
        "Event": "change_external_chat",
        "ChangeType": "create",
        "ChatId": chat_id,
    }


def tag_created(tag_id: str) -> dict[str, Any]:
    return {
        "ToUserName": TEST_CORP_ID,
        "FromUserName": "sys",
        "CreateTime": "1700000200",
        "MsgType": "event",
        "Event": "change_external_tag",
        "ChangeType": "create",
        "Id": tag_id,
        "TagType": "tag",
    }


def inbox_item(fields: dict[str, Any]) -> InboxItem:
    """What the edge puts in the inbox for these callback fields."""
    event = parse_event(fields)
    return InboxItem(
        dedup_key=event.dedup_key,
        ordering_key=event.ordering_key,
        event_type=event.event_type,
        corp_id=event.corp_id,
        payload=event.to_payload(),
    )
