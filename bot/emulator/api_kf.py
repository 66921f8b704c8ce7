"""微信客服 API: ``kf/sync_msg`` pages an account's messages with an opaque cursor (limit ≤ 1000).

The cursor encodes the position in the account's history; ``next_cursor`` is always returned so the next
sync continues where this one stopped, and ``has_more`` says whether to call again now. The Token from a
``kf_msg_or_event`` callback is optional, but when given it must be one WeCom issued for this account less
than 10 minutes ago (95007 otherwise).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from bot.emulator.routes import ApiCall, ApiError, route

SYNC_MAX_LIMIT = 1000
ERR_INVALID_OPEN_KFID = 95000
ERR_INVALID_MSG_TOKEN = 95007


def encode_kf_cursor(open_kfid: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"kf:{open_kfid}:{offset}".encode()).decode().rstrip("=")


def decode_kf_cursor(cursor: str, open_kfid: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, kfid, number = text.split(":", 2)
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(40058, "invalid cursor") from None
    if prefix != "kf" or kfid != open_kfid or offset < 0:
        raise ApiError(40058, "invalid cursor")
    return offset


@route("kf/sync_msg", "POST")
def sync_msg(call: ApiCall) -> dict[str, Any]:
    open_kfid = call.text("open_kfid")
    account = call.state.kf.accounts.get(open_kfid)
    if account is None:
        raise ApiError(ERR_INVALID_OPEN_KFID, f"unknown open_kfid {open_kfid}")
    limit = call.int_arg("limit", SYNC_MAX_LIMIT)
    if not 1 <= limit <= SYNC_MAX_LIMIT:
        raise ApiError(40058, f"limit must be 1..{SYNC_MAX_LIMIT}, got {limit}")
    token = call.arg("token", "") or ""
    if token and not call.state.kf_token_valid(str(token), open_kfid):
        raise ApiError(ERR_INVALID_MSG_TOKEN)
    cursor = str(call.arg("cursor", "") or "")
    start = decode_kf_cursor(cursor, open_kfid) if cursor else 0
    start = min(start, len(account.messages))
    end = min(start + limit, len(account.messages))
    return {
        "next_cursor": encode_kf_cursor(open_kfid, end),
        "has_more": 1 if end < len(account.messages) else 0,
        "msg_list": account.messages[start:end],
    }
