"""What each outbox command does: a registry from :class:`CommandKind` to an executor.

An executor receives the client, the claimed command and the session factory, performs the WeCom call(s)
and returns the result stored on the command. It raises typed WeCom errors; the dispatcher decides what
they mean for the command's state. Fetch executors write what they fetched in their own transaction through
the scrm sync services.

Welcome messages and 41051 ("welcome code already used or the chat already began"): the error is final,
never retried. When no earlier call can have reached WeCom it means someone else (the chat itself, another app)
consumed the code, so the command *fails* with that reason. After an earlier call whose answer we never heard
(``call_started_at`` is set: timeout, lost connection, crash after sending) the most likely story is that our own
welcome went out: the command is *done* with ``{"already_sent": true}``. Past the deadline no call is made; such a
command ends ``unknown`` (see :mod:`bot.outbox.runner`).

Group sends (``add_msg_template``) are not idempotent at WeCom: every call creates another task, and the
customer would get the message twice once the sender confirms both. So on an attempt after the first (an
earlier one may have created the task and lost the answer) the executor first looks for the task it may
already have created: ``get_groupmsg_list_v2`` by ``creator`` = sender over a window from shortly before
``command.created_at``, a message with the same content fingerprint (text; attachment types, link titles and
urls, mini-program pages), whose recipients
(``get_groupmsg_task`` + ``get_groupmsg_send_result``) are all among the command's. Found, it returns that
``msgid`` (``"recovered": true``), its ``fail_list`` being the command's recipients the task does not
reach; only when nothing matches does it create the task.

Campaign reminders and cancellations (``remind_groupmsg``, ``cancel_groupmsg``) are written by the campaign
tracking tick, which runs them at once through :meth:`bot.outbox.runner.CommandRunner.run_key`; their keys make a
second leader or a replay a no-op. A cancel that WeCom answers with 40058 (nothing left to cancel) is done.

Customer transfers (``transfer_customer``): see :func:`transfer_customer` — a repeated call answers 40129
for a customer whose transfer is already under way, which counts as our earlier call having reached WeCom.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.wecom.client import WeComClient
from bot.wecom.errors import FatalError, WeComError
from scrm.commands import CommandKind
from scrm.db import SessionFactory, write_transaction
from scrm.intent.tags import apply_added_corp_tags
from scrm.leads.transfers import apply_call_result
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import OutboxCommand
from scrm.sync.contacts import apply_contact_detail
from scrm.sync.groups import apply_group_detail
from scrm.sync.tags import apply_corp_tag_list

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecutorEnv:
    """What an executor may use besides the client and its command: the database, and the lifecycle hooks through
    which what a fetch brings back (e.g. tags on a contact's detail) reaches the features that care."""

    sessions: SessionFactory
    hooks: LifecycleHooks = NO_HOOKS


Executor = Callable[[WeComClient, OutboxCommand, ExecutorEnv], Awaitable[dict[str, Any]]]

WELCOME_CODE_USED = 41051
NOTHING_TO_CANCEL = 40058  # cancel_groupmsg_send: every task of the message was already sent or cancelled
MAX_FOLLOW_USER_PAGES = 100  # externalcontact/get pages follow_user; a contact with >100 pages is a loop
GROUPMSG_CLOCK_SKEW = 300  # seconds WeCom's create_time may precede our created_at (clocks differ)
GROUPMSG_LOOKUP_SPAN = 7 * 86_400  # how long after created_at an earlier attempt may have created the task
GROUPMSG_FILTER_COMPANY = 0  # get_groupmsg_list_v2 filter_type: tasks created by the company (API)
MAX_GROUPMSG_PAGES = 50  # list pages of 100 messages / detail pages of 1000 rows scanned per lookup


async def send_welcome(client: WeComClient, command: OutboxCommand, _env: ExecutorEnv) -> dict[str, Any]:
    payload = command.payload
    try:
        return await client.send_welcome_msg(
            str(payload["welcome_code"]), payload.get("text"), payload.get("attachments") or None
        )
    except FatalError as exc:
        if exc.errcode == WELCOME_CODE_USED and command.call_started_at is not None:
            return {"errcode": WELCOME_CODE_USED, "already_sent": True}
        raise


async def mark_tag(client: WeComClient, command: OutboxCommand, env: ExecutorEnv) -> dict[str, Any]:
    """mark_tag, then read the contact back: WeCom sends no callback for API changes, and a detail fetched just
    before this call may land after the local mirror was updated, so the mirror is refreshed from WeCom."""
    payload = command.payload
    external_userid = str(payload["external_userid"])
    result = await client.mark_tag(
        str(payload["userid"]),
        external_userid,
        list(payload.get("add_tag") or []),
        list(payload.get("remove_tag") or []),
    )
    try:
        await _fetch_and_apply(client, command.corp_id, external_userid, env)
    except Exception as exc:  # the mark itself succeeded: never repeat it because the read-back failed
        log.warning(
            "contact not read back after mark_tag; the hourly resync will",
            extra={"external_userid": external_userid, "error": f"{type(exc).__name__}: {exc}"},
        )
        return {**result, "read_back": False}
    return result


async def send_app_message(client: WeComClient, command: OutboxCommand, _env: ExecutorEnv) -> dict[str, Any]:
    """message/send once every recipient has a slot in the shared per-member limiter; without one the client
    raises MemberSlotUnavailable before sending and the dispatcher postpones the command (see its docstring)."""
    return await client.send_app_message(dict(command.payload), wait_for_slot=False)


async def transfer_customer(client: WeComClient, command: OutboxCommand, env: ExecutorEnv) -> dict[str, Any]:
    """transfer_customer (在职继承) for one customer, then the transfer row follows the answer.

    Not idempotent at WeCom, but safe to repeat: WeCom answers 40129 ("a transfer is in progress") for a
    customer already being transferred, so after an attempt whose answer was lost the retry learns that
    the first call got through, and the transfer is treated as waiting."""
    payload = command.payload
    external_userid = str(payload["external_userid"])
    transfer_id = int(payload["transfer_id"])
    try:
        answer = await client.transfer_customer(
            str(payload["handover_userid"]),
            str(payload["takeover_userid"]),
            [external_userid],
            str(payload.get("transfer_success_msg") or "") or None,
        )
    except FatalError as exc:  # the whole call was refused (e.g. an unknown member): the transfer failed
        if exc.errcode is not None:
            async with write_transaction(env.sessions) as session:
                await apply_call_result(session, transfer_id, errcode=exc.errcode, now=_client_now(client))
        raise
    entry = next((c for c in answer.get("customer") or [] if c.get("external_userid") == external_userid), None)
    errcode = int(entry.get("errcode", 0)) if entry is not None else 0
    async with write_transaction(env.sessions) as session:
        await apply_call_result(session, transfer_id, errcode=errcode, now=_client_now(client))
    return {"external_userid": external_userid, "errcode": errcode}


async def remind_groupmsg(client: WeComClient, command: OutboxCommand, _env: ExecutorEnv) -> dict[str, Any]:
    return await client.remind_groupmsg_send(str(command.payload["msgid"]))


async def cancel_groupmsg(client: WeComClient, command: OutboxCommand, _env: ExecutorEnv) -> dict[str, Any]:
    try:
        return await client.cancel_groupmsg_send(str(command.payload["msgid"]))
    except WeComError as exc:
        if exc.errcode == NOTHING_TO_CANCEL:
            return {"errcode": NOTHING_TO_CANCEL, "nothing_to_cancel": True}
        raise


def _client_now(client: WeComClient) -> datetime:
    return datetime.fromtimestamp(client.now(), UTC)


def _msg_template_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The add_msg_template request of a command (``source`` and ``ref`` are ours, not WeCom's)."""
    chat_type = str(payload.get("chat_type") or "single")
    body: dict[str, Any] = {"chat_type": chat_type}
    if payload.get("sender"):
        body["sender"] = str(payload["sender"])
    key = _recipient_key(chat_type)
    body[key] = [str(r) for r in payload.get(key) or []]
    if payload.get("text"):
        body["text"] = dict(payload["text"])
    if payload.get("attachments"):
        body["attachments"] = list(payload["attachments"])
    return body


def _recipient_key(chat_type: str) -> str:
    return "chat_id_list" if chat_type == "group" else "external_userid"


async def _task_recipients(client: WeComClient, msgid: str) -> set[str]:
    """Every customer or group the group send ``msgid`` addresses, over all its senders."""
    senders: list[str] = []
    cursor = ""
    for _ in range(MAX_GROUPMSG_PAGES):
        page = await client.get_groupmsg_task(msgid, cursor=cursor, limit=1000)
        senders.extend(str(task["userid"]) for task in page.get("task_list") or [])
        cursor = str(page.get("next_cursor") or "")
        if not cursor:
            break
    reached: set[str] = set()
    for userid in senders:
        cursor = ""
        for _ in range(MAX_GROUPMSG_PAGES):
            page = await client.get_groupmsg_send_result(msgid, userid, cursor=cursor, limit=1000)
            reached.update(str(r.get("external_userid") or r.get("chat_id")) for r in page.get("send_list") or [])
            cursor = str(page.get("next_cursor") or "")
            if not cursor:
                break
    return reached


def _fingerprint(text: str, attachments: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What identifies a group send's content in get_groupmsg_list_v2: the text, and per attachment its type
    with a link's title and url or a mini program's page (image media ids may be re-issued by WeCom)."""
    parts: list[tuple[str, ...]] = []
    for item in attachments:
        kind = str(item.get("msgtype", ""))
        value = item.get(kind)
        detail: dict[str, Any] = value if isinstance(value, dict) else {}
        if kind == "link":
            parts.append((kind, str(detail.get("title", "")), str(detail.get("url", ""))))
        elif kind == "miniprogram":
            parts.append((kind, str(detail.get("appid", "")), str(detail.get("page", ""))))
        else:
            parts.append((kind,))
    return (text, tuple(parts))


async def _created_earlier(client: WeComClient, command: OutboxCommand, body: dict[str, Any]) -> dict[str, Any] | None:
    """The group send an earlier attempt of ``command`` created, if WeCom has one (see the module docstring)."""
    start = int(command.created_at.timestamp()) - GROUPMSG_CLOCK_SKEW
    content = str((body.get("text") or {}).get("content", ""))
    wanted_fingerprint = _fingerprint(content, body.get("attachments") or [])
    wanted: list[str] = body[_recipient_key(body["chat_type"])]
    cursor = ""
    for _ in range(MAX_GROUPMSG_PAGES):
        page = await client.get_groupmsg_list_v2(
            chat_type=body["chat_type"],
            start_time=start,
            end_time=start + GROUPMSG_LOOKUP_SPAN,
            creator=body.get("sender"),
            filter_type=GROUPMSG_FILTER_COMPANY,
            cursor=cursor,
            limit=100,
        )
        for item in page.get("group_msg_list") or []:
            listed = _fingerprint(str((item.get("text") or {}).get("content", "")), item.get("attachments") or [])
            if listed != wanted_fingerprint:
                continue
            msgid = str(item["msgid"])
            reached = await _task_recipients(client, msgid)
            if reached and (not wanted or reached <= set(wanted)):
                return {"msgid": msgid, "fail_list": [r for r in wanted if r not in reached], "recovered": True}
        cursor = str(page.get("next_cursor") or "")
        if not cursor:
            return None
    return None


async def add_msg_template(client: WeComClient, command: OutboxCommand, _env: ExecutorEnv) -> dict[str, Any]:
    body = _msg_template_body(command.payload)
    if command.attempts > 1:
        earlier = await _created_earlier(client, command, body)
        if earlier is not None:
            return earlier
    created = await client.add_msg_template(body)
    return {"msgid": str(created.get("msgid", "")), "fail_list": list(created.get("fail_list") or [])}


async def fetch_contact(client: WeComClient, command: OutboxCommand, env: ExecutorEnv) -> dict[str, Any]:
    external_userid = str(command.payload["external_userid"])
    follow_users = await _fetch_and_apply(client, command.corp_id, external_userid, env)
    return {"external_userid": external_userid, "follow_users": follow_users}


async def _fetch_and_apply(client: WeComClient, corp_id: str, external_userid: str, env: ExecutorEnv) -> int:
    """externalcontact/get (every follow_user page) mirrored through the sync service; how many follow users."""
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
    async with write_transaction(env.sessions, urgent=False) as session:
        await apply_contact_detail(session, corp_id, data, hooks=env.hooks)
    return len(follow_users)


async def fetch_group(client: WeComClient, command: OutboxCommand, env: ExecutorEnv) -> dict[str, Any]:
    chat_id = str(command.payload["chat_id"])
    body = await client.groupchat_get(chat_id, need_name=1)
    group_chat: dict[str, Any] = body.get("group_chat") or {}
    async with write_transaction(env.sessions, urgent=False) as session:
        await apply_group_detail(session, command.corp_id, group_chat)
    return {
        "chat_id": chat_id,
        "members": len(group_chat.get("member_list") or []),
        "member_version": group_chat.get("member_version", ""),
    }


async def refresh_corp_tags(client: WeComClient, command: OutboxCommand, env: ExecutorEnv) -> dict[str, Any]:
    body = await client.get_corp_tag_list()
    groups: list[dict[str, Any]] = list(body.get("tag_group") or [])
    async with write_transaction(env.sessions, urgent=False) as session:
        await apply_corp_tag_list(session, command.corp_id, groups)
    return {"tag_groups": len(groups), "tags": sum(len(group.get("tag") or []) for group in groups)}


async def add_corp_tag(client: WeComClient, command: OutboxCommand, env: ExecutorEnv) -> dict[str, Any]:
    """Create the named tags the group lacks. add_corp_tag is not idempotent (a retry after a lost answer
    would fail with 40071), so the current list is read (and mirrored) first and only missing names are sent."""
    group_name = str(command.payload["group_name"])
    wanted = [str(t["name"]) for t in command.payload.get("tag") or [] if t.get("name")]
    groups: list[dict[str, Any]] = list((await client.get_corp_tag_list()).get("tag_group") or [])
    async with write_transaction(env.sessions, urgent=False) as session:
        await apply_corp_tag_list(session, command.corp_id, groups)
    group = next((g for g in groups if g.get("group_name") == group_name and not g.get("deleted")), None)
    present = {str(t.get("name")) for t in (group or {}).get("tag") or [] if not t.get("deleted")}
    missing = [name for name in dict.fromkeys(wanted) if name not in present]
    if not missing:
        return {"group_id": str((group or {}).get("group_id", "")), "created": 0}
    tags = [{"name": name} for name in missing]
    if group is not None:
        created = await client.add_corp_tag(tags, group_id=str(group["group_id"]))
    else:
        created = await client.add_corp_tag(tags, group_name=group_name)
    tag_group: dict[str, Any] = created.get("tag_group") or {}
    async with write_transaction(env.sessions, urgent=False) as session:
        written = await apply_added_corp_tags(session, command.corp_id, tag_group)
    return {"group_id": str(tag_group.get("group_id", "")), "created": written}


EXECUTORS: dict[CommandKind, Executor] = {
    CommandKind.SEND_WELCOME: send_welcome,
    CommandKind.MARK_TAG: mark_tag,
    CommandKind.SEND_APP_MESSAGE: send_app_message,
    CommandKind.ADD_MSG_TEMPLATE: add_msg_template,
    CommandKind.FETCH_CONTACT: fetch_contact,
    CommandKind.FETCH_GROUP: fetch_group,
    CommandKind.REFRESH_CORP_TAGS: refresh_corp_tags,
    CommandKind.ADD_CORP_TAG: add_corp_tag,
    CommandKind.TRANSFER_CUSTOMER: transfer_customer,
    CommandKind.REMIND_GROUPMSG: remind_groupmsg,
    CommandKind.CANCEL_GROUPMSG: cancel_groupmsg,
}


def executor_for(kind: str) -> Executor | None:
    """The executor of a stored command kind (None for a kind this build does not know)."""
    try:
        return EXECUTORS[CommandKind(kind)]
    except ValueError:
        return None
