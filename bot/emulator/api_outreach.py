"""What reaches people: send_welcome_msg (once, within 20 s), add_contact_way, and app messages
(message/send, where WeCom silently drops more than 30 a minute / 1000 an hour per member)."""

from __future__ import annotations

import json
from typing import Any

from bot.emulator.counters import AppMessageDelivered, WelcomeSent
from bot.emulator.records import ContactWay
from bot.emulator.routes import ApiCall, ApiError, route

STATE_MAX_LEN = 30
MAX_ATTACHMENTS = 9
DEFAULT_DUPLICATE_INTERVAL = 1800
MAX_DUPLICATE_INTERVAL = 4 * 3600
MESSAGE_TYPES = frozenset(
    {"text", "image", "voice", "video", "file", "textcard", "news", "mpnews", "markdown", "template_card"}
)


@route("externalcontact/send_welcome_msg", "POST", contact_api=True)
def send_welcome_msg(call: ApiCall) -> dict[str, Any]:
    state = call.state
    code = call.text("welcome_code")
    attachments = call.arg("attachments", []) or []
    text = call.arg("text")
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise ApiError(40058, f"attachments must be a list of at most {MAX_ATTACHMENTS}")
    if not attachments and not (isinstance(text, dict) and text.get("content")):
        raise ApiError(40058, "text.content or attachments required")
    errcode = state.welcome_codes.use(code, state.now())
    if errcode:
        state.counters.reject_welcome(code, errcode)
        raise ApiError(errcode)
    record = state.welcome_codes.get(code)
    assert record is not None  # use() returned 0, so the code exists
    state.counters.welcome_sends[code] += 1
    state.counters.welcomes.append(
        WelcomeSent(code, record.userid, record.external_userid, dict(call.body), state.now())
    )
    return {}


@route("externalcontact/add_contact_way", "POST", contact_api=True)
def add_contact_way(call: ApiCall) -> dict[str, Any]:
    state = call.state
    way_type, scene = call.int_arg("type", 0), call.int_arg("scene", 0)
    if way_type not in (1, 2) or scene not in (1, 2):
        raise ApiError(40058, "type and scene must be 1 or 2")
    way_state = call.text("state", required=False)
    if len(way_state) > STATE_MAX_LEN:
        raise ApiError(40058, f"state is {len(way_state)} characters, over {STATE_MAX_LEN}")
    users = call.str_list("user")
    if not users or (way_type == 1 and len(users) != 1):
        raise ApiError(40058, "type 1 takes exactly one user, type 2 at least one")
    for userid in users:
        member = state.staff.get(userid)
        if member is None or not member.has_contact_permission:
            raise ApiError(40003, f"{userid} cannot use contact ways")
    config_id = state.new_id("way")
    qr_code = f"https://wework.qpic.cn/wwpic/{config_id}/0" if scene == 2 else ""
    skip_verify = bool(call.arg("skip_verify", True))
    state.contact_ways[config_id] = ContactWay(config_id, way_type, scene, way_state, users, skip_verify, qr_code)
    result: dict[str, Any] = {"config_id": config_id}
    if qr_code:
        result["qr_code"] = qr_code
    return result


def _duplicate(call: ApiCall, payload: dict[str, Any]) -> bool:
    """enable_duplicate_check: the same message within the interval is not delivered again."""
    if not call.int_arg("enable_duplicate_check", 0):
        return False
    interval = min(call.int_arg("duplicate_check_interval", DEFAULT_DUPLICATE_INTERVAL), MAX_DUPLICATE_INTERVAL)
    state, now = call.state, call.state.now()
    key = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    last = state.recent_app_messages.get(key)
    if last is not None and now - last < interval:
        return True
    state.recent_app_messages[key] = now
    return False


@route("message/send", "POST")
def message_send(call: ApiCall) -> dict[str, Any]:
    state = call.state
    if call.app is None or call.int_arg("agentid", -1) != call.app.agent_id:
        raise ApiError(40056)
    msgtype = call.text("msgtype")
    if msgtype not in MESSAGE_TYPES:
        raise ApiError(40008)
    content = call.arg(msgtype)
    if not isinstance(content, dict) or not content:
        raise ApiError(40058, f"{msgtype} content missing")
    touser = call.text("touser", required=False)
    requested = list(state.staff) if touser == "@all" else [u for u in touser.split("|") if u]
    valid = [u for u in dict.fromkeys(requested) if u in state.staff]
    invalid = [u for u in requested if u not in state.staff]
    if not valid:
        raise ApiError(81013)
    msgid = state.new_id("msg")
    payload = {"touser": valid, "msgtype": msgtype, "content": content}
    if _duplicate(call, payload):
        for userid in valid:
            state.counters.messages_duplicate[userid] += 1
    else:
        for userid in valid:
            if state.message_quota.admit(userid, state.now()):
                state.counters.messages_delivered[userid] += 1
                state.counters.app_messages.append(
                    AppMessageDelivered(msgid, userid, msgtype, dict(call.body), state.now())
                )
            else:
                state.counters.messages_dropped[userid] += 1
    return {
        "invaliduser": "|".join(invalid),
        "invalidparty": "",
        "invalidtag": "",
        "unlicenseduser": "",
        "msgid": msgid,
    }
