"""Company group sends (企业群发): add_msg_template and the APIs that read, remind and cancel its tasks.

- ``add_msg_template`` (92135) validates the request, puts unreachable recipients in ``fail_list`` and
  creates one unsent task per sender (``sender`` given: that member; ``single`` without ``sender``: each
  customer's first follower). With ``groupmsg_auto_confirm`` the senders confirm at once.
- ``get_groupmsg_list_v2``, ``get_groupmsg_task`` and ``get_groupmsg_send_result`` (93338) page the
  records; ``remind_groupmsg_send`` allows three reminders per message in 24 h; ``cancel_groupmsg_send``
  cancels the tasks not yet sent.

Where the docs give no errcode (every recipient invalid, a fourth reminder, cancelling a sent message) the
emulator answers 40058 with the reason in its log.
"""

from __future__ import annotations

from typing import Any

from bot.emulator.groupmsg_records import (
    CREATE_TYPE_COMPANY,
    TASK_UNSENT,
    GroupMsg,
    GroupMsgRecipient,
    SenderTask,
)
from bot.emulator.routes import ApiCall, ApiError, page, route
from bot.emulator.state import EmulatorState

CHAT_TYPES = ("single", "group")
MAX_CUSTOMERS = 10_000
MAX_GROUPS = 2_000
MAX_TEXT_BYTES = 4_000
MAX_ATTACHMENTS = 9
ATTACHMENT_TYPES = frozenset({"image", "link", "miniprogram", "video", "file"})
LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT = 50, 100
DETAIL_DEFAULT_LIMIT, DETAIL_MAX_LIMIT = 500, 1000
MAX_LIST_SPAN = 31 * 86_400  # start_time..end_time may span at most one month
REMINDS_PER_DAY = 3
DAY = 86_400.0
FILTER_COMPANY, FILTER_PERSONAL, FILTER_ALL = 0, 1, 2


def _content(call: ApiCall) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    text = call.arg("text")
    if text is not None and not (isinstance(text, dict) and isinstance(text.get("content", ""), str)):
        raise ApiError(40058, "text must be an object with a string content")
    content = str((text or {}).get("content", ""))
    if len(content.encode()) > MAX_TEXT_BYTES:
        raise ApiError(40058, f"text.content is {len(content.encode())} bytes, over {MAX_TEXT_BYTES}")
    attachments = call.arg("attachments", []) or []
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise ApiError(40058, f"attachments must be a list of at most {MAX_ATTACHMENTS}")
    for item in attachments:
        msgtype = item.get("msgtype") if isinstance(item, dict) else None
        if msgtype not in ATTACHMENT_TYPES or not isinstance(item.get(msgtype), dict):
            raise ApiError(40058, f"attachment type {msgtype!r} is not one of {sorted(ATTACHMENT_TYPES)}")
    if not content and not attachments:
        raise ApiError(40058, "nothing to send: text.content or attachments required")
    return ({"content": content} if content else None), attachments


def _sender(state: EmulatorState, userid: str) -> None:
    member = state.staff.get(userid)
    if member is None or not member.has_contact_permission:
        raise ApiError(40003, f"sender {userid} cannot send group messages")


def _single_targets(call: ApiCall, sender: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(sender, external_userid) pairs to create, and the external_userids that go to fail_list."""
    state = call.state
    customers = list(dict.fromkeys(call.str_list("external_userid")))
    if len(customers) > MAX_CUSTOMERS:
        raise ApiError(40058, f"external_userid lists {len(customers)} customers, over {MAX_CUSTOMERS}")
    if not customers:
        if not sender:
            raise ApiError(40058, "external_userid and sender cannot both be empty")
        customers = [f.external_userid for f in state.follows_of_staff(sender)]
    targets: list[tuple[str, str]] = []
    failed: list[str] = []
    for external_userid in customers:
        if sender:
            if (external_userid, sender) in state.follows:
                targets.append((sender, external_userid))
            else:
                failed.append(external_userid)
            continue
        followers = sorted(state.follows_of_contact(external_userid), key=lambda f: (f.createtime, f.userid))
        followers = [f for f in followers if (m := state.staff.get(f.userid)) and m.has_contact_permission]
        if followers:
            targets.append((followers[0].userid, external_userid))
        else:
            failed.append(external_userid)
    return targets, failed


def _group_targets(call: ApiCall, sender: str) -> tuple[list[tuple[str, str]], list[str]]:
    state = call.state
    if not sender:
        raise ApiError(40058, "sender is required for chat_type group")
    chat_ids = list(dict.fromkeys(call.str_list("chat_id_list")))
    if len(chat_ids) > MAX_GROUPS:
        raise ApiError(40058, f"chat_id_list lists {len(chat_ids)} groups, over {MAX_GROUPS}")
    if not chat_ids:
        chat_ids = [g.chat_id for g in state.groups.values() if g.owner == sender and not g.dismissed]
    targets: list[tuple[str, str]] = []
    failed: list[str] = []
    for chat_id in chat_ids:
        group = state.groups.get(chat_id)
        if group is not None and not group.dismissed and group.owner == sender:
            targets.append((sender, chat_id))
        else:
            failed.append(chat_id)
    return targets, failed


@route("externalcontact/add_msg_template", "POST", contact_api=True)
def add_msg_template(call: ApiCall) -> dict[str, Any]:
    state = call.state
    chat_type = call.arg("chat_type", "single") or "single"
    if chat_type not in CHAT_TYPES:
        raise ApiError(40058, f"chat_type must be one of {CHAT_TYPES}")
    sender = call.text("sender", required=False)
    if sender:
        _sender(state, sender)
    text, attachments = _content(call)
    targets, failed = (_single_targets if chat_type == "single" else _group_targets)(call, sender)
    if not targets:
        raise ApiError(40058, "no valid recipient: every one is in fail_list")
    msgid = "msg" + state.new_id("groupmsg")[2:]
    now = state.now()
    msg = GroupMsg(msgid, chat_type, sender, int(now), text, attachments, created_at=now)
    for userid, recipient in targets:
        msg.tasks.setdefault(userid, SenderTask(userid))
        msg.recipients.append(GroupMsgRecipient(userid, recipient))
    state.group_msgs[msgid] = msg
    if state.groupmsg_auto_confirm:
        for userid in list(msg.tasks):
            state.confirm_groupmsg(msgid, userid)
    return {"fail_list": failed, "msgid": msgid}


def _limit(call: ApiCall, default: int, maximum: int) -> int:
    limit = call.int_arg("limit", default) or default
    if not 1 <= limit <= maximum:
        raise ApiError(40058, f"limit must be 1..{maximum}, got {limit}")
    return limit


def _msg(call: ApiCall) -> GroupMsg:
    msg = call.state.group_msgs.get(call.text("msgid"))
    if msg is None:
        raise ApiError(40058, "invalid msgid")
    return msg


@route("externalcontact/get_groupmsg_list_v2", "POST", contact_api=True)
def get_groupmsg_list_v2(call: ApiCall) -> dict[str, Any]:
    chat_type = call.text("chat_type")
    if chat_type not in CHAT_TYPES:
        raise ApiError(40058, f"chat_type must be one of {CHAT_TYPES}")
    start, end = call.int_arg("start_time", 0), call.int_arg("end_time", 0)
    if not start or not end or end < start or end - start > MAX_LIST_SPAN:
        raise ApiError(40058, "start_time and end_time are required and may span at most one month")
    filter_type = call.int_arg("filter_type", FILTER_ALL)
    if filter_type not in (FILTER_COMPANY, FILTER_PERSONAL, FILTER_ALL):
        raise ApiError(40058, "filter_type must be 0, 1 or 2")
    creator = call.text("creator", required=False)
    limit = _limit(call, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)
    found = [
        msg
        for msg in call.state.group_msgs.values()
        if msg.chat_type == chat_type
        and start <= msg.create_time <= end
        and (not creator or msg.creator == creator)
        and filter_type != FILTER_PERSONAL
    ]
    found.sort(key=lambda msg: msg.create_time)  # stable: same-second messages stay in creation order
    chunk, next_cursor = page(found, str(call.arg("cursor", "") or ""), limit)
    listed: list[dict[str, Any]] = []
    for msg in chunk:
        item: dict[str, Any] = {"msgid": msg.msgid, "create_time": msg.create_time, "create_type": CREATE_TYPE_COMPANY}
        if msg.creator:
            item["creator"] = msg.creator
        if msg.text:
            item["text"] = dict(msg.text)
        if msg.attachments:
            item["attachments"] = list(msg.attachments)
        listed.append(item)
    return {"group_msg_list": listed, "next_cursor": next_cursor}


@route("externalcontact/get_groupmsg_task", "POST", contact_api=True)
def get_groupmsg_task(call: ApiCall) -> dict[str, Any]:
    msg = _msg(call)
    limit = _limit(call, DETAIL_DEFAULT_LIMIT, DETAIL_MAX_LIMIT)
    chunk, next_cursor = page(list(msg.tasks.values()), str(call.arg("cursor", "") or ""), limit)
    tasks = [
        {"userid": t.userid, "status": t.status, **({"send_time": t.send_time} if t.send_time else {})} for t in chunk
    ]
    return {"task_list": tasks, "next_cursor": next_cursor}


@route("externalcontact/get_groupmsg_send_result", "POST", contact_api=True)
def get_groupmsg_send_result(call: ApiCall) -> dict[str, Any]:
    msg = _msg(call)
    userid = call.text("userid")
    limit = _limit(call, DETAIL_DEFAULT_LIMIT, DETAIL_MAX_LIMIT)
    chunk, next_cursor = page(msg.recipients_of(userid), str(call.arg("cursor", "") or ""), limit)
    key = "chat_id" if msg.chat_type == "group" else "external_userid"
    results: list[dict[str, Any]] = []
    for r in chunk:
        item: dict[str, Any] = {key: r.recipient, "userid": r.userid, "status": r.status}
        if r.send_time:
            item["send_time"] = r.send_time
        results.append(item)
    return {"send_list": results, "next_cursor": next_cursor}


@route("externalcontact/remind_groupmsg_send", "POST", contact_api=True)
def remind_groupmsg_send(call: ApiCall) -> dict[str, Any]:
    msg = _msg(call)
    now = call.state.now()
    if not any(t.status == TASK_UNSENT and not t.cancelled for t in msg.tasks.values()):
        raise ApiError(40058, "no unsent task to remind")
    msg.reminders = [at for at in msg.reminders if at > now - DAY]
    if len(msg.reminders) >= REMINDS_PER_DAY:
        raise ApiError(40058, f"at most {REMINDS_PER_DAY} reminders per message in 24 hours")
    msg.reminders.append(now)
    return {}


@route("externalcontact/cancel_groupmsg_send", "POST", contact_api=True)
def cancel_groupmsg_send(call: ApiCall) -> dict[str, Any]:
    msg = _msg(call)
    unsent = [t for t in msg.tasks.values() if t.status == TASK_UNSENT and not t.cancelled]
    if not unsent:
        raise ApiError(40058, "every task was already sent or cancelled")
    for task in unsent:
        task.cancelled = True
    return {}
