"""What each outbox command does: a registry from :class:`CommandKind` to an executor.

An executor receives the client, the claimed command and the session factory, performs the WeCom call(s)
and returns the result stored on the command. It raises typed WeCom errors; the dispatcher decides what
they mean for the command's state. Fetch executors write what they fetched in their own transaction through
the scrm sync services.

Welcome messages and 41051 ("welcome code already used or the chat already began"): the error is final,
never retried. On the first attempt it means someone else (the chat itself, another app) consumed the code,
so the command *fails* with that reason. On a later attempt an earlier attempt may have reached WeCom
without us hearing the answer (timeout, lost connection, crash after sending), so the most likely story is
that our own welcome went out: the command is *done* with ``{"already_sent": true}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.wecom.client import WeComClient
from bot.wecom.errors import FatalError
from scrm.commands import CommandKind
from scrm.db import SessionFactory, write_transaction
from scrm.models import OutboxCommand

Executor = Callable[[WeComClient, OutboxCommand, SessionFactory], Awaitable[dict[str, Any]]]

WELCOME_CODE_USED = 41051
MAX_FOLLOW_USER_PAGES = 100  # externalcontact/get pages follow_user; a contact with >100 pages is a loop


async def send_welcome(client: WeComClient, command: OutboxCommand, _sessions: SessionFactory) -> dict[str, Any]:
    payload = command.payload
    try:
        return await client.send_welcome_msg(
            str(payload["welcome_code"]), payload.get("text"), payload.get("attachments") or None
        )
    except FatalError as exc:
        if exc.errcode == WELCOME_CODE_USED and command.attempts > 1:
            return {"errcode": WELCOME_CODE_USED, "already_sent": True}
        raise


async def mark_tag(client: WeComClient, command: OutboxCommand, _sessions: SessionFactory) -> dict[str, Any]:
    payload = command.payload
    return await client.mark_tag(
        str(payload["userid"]),
        str(payload["external_userid"]),
        list(payload.get("add_tag") or []),
        list(payload.get("remove_tag") or []),
    )


async def send_app_message(client: WeComClient, command: OutboxCommand, _sessions: SessionFactory) -> dict[str, Any]:
    return await client.send_app_message(dict(command.payload))


async def fetch_contact(client: WeComClient, command: OutboxCommand, sessions: SessionFactory) -> dict[str, Any]:
    from scrm.sync.contacts import apply_contact_detail

    external_userid = str(command.payload["external_userid"])
    page = await client.get_external_contact(external_userid)
    data: dict[str, Any] = {"external_contact": page.get("external_contact", {})}
    follow_users: list[dict[str, Any]] = list(page.get("follow_user") or [])
    for _ in range(MAX_FOLLOW_USER_PAGES):
        cursor = str(page.get("next_cursor") or "")
        if not cursor:
            break
        page = await client.get_external_contact(external_userid, cursor)
        follow_users.extend(page.get("follow_user") or [])
    data["follow_user"] = follow_users
    async with write_transaction(sessions, urgent=False) as session:
        await apply_contact_detail(session, command.corp_id, data)
    return {"external_userid": external_userid, "follow_users": len(follow_users)}


async def fetch_group(client: WeComClient, command: OutboxCommand, sessions: SessionFactory) -> dict[str, Any]:
    from scrm.sync.groups import apply_group_detail

    chat_id = str(command.payload["chat_id"])
    body = await client.groupchat_get(chat_id, need_name=1)
    group_chat: dict[str, Any] = body.get("group_chat") or {}
    async with write_transaction(sessions, urgent=False) as session:
        await apply_group_detail(session, command.corp_id, group_chat)
    return {
        "chat_id": chat_id,
        "members": len(group_chat.get("member_list") or []),
        "member_version": group_chat.get("member_version", ""),
    }


async def refresh_corp_tags(client: WeComClient, command: OutboxCommand, sessions: SessionFactory) -> dict[str, Any]:
    from scrm.sync.tags import apply_corp_tag_list

    body = await client.get_corp_tag_list()
    groups: list[dict[str, Any]] = list(body.get("tag_group") or [])
    async with write_transaction(sessions, urgent=False) as session:
        await apply_corp_tag_list(session, command.corp_id, groups)
    return {"tag_groups": len(groups), "tags": sum(len(group.get("tag") or []) for group in groups)}


EXECUTORS: dict[CommandKind, Executor] = {
    CommandKind.SEND_WELCOME: send_welcome,
    CommandKind.MARK_TAG: mark_tag,
    CommandKind.SEND_APP_MESSAGE: send_app_message,
    CommandKind.FETCH_CONTACT: fetch_contact,
    CommandKind.FETCH_GROUP: fetch_group,
    CommandKind.REFRESH_CORP_TAGS: refresh_corp_tags,
}


def executor_for(kind: str) -> Executor | None:
    """The executor of a stored command kind (None for a kind this build does not know)."""
    try:
        return EXECUTORS[CommandKind(kind)]
    except ValueError:
        return None
