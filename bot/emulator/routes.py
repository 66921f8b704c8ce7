"""The emulator's API registry: each WeCom path maps to one handler that returns the JSON result.

Handlers take an :class:`ApiCall` and return the result fields (``errcode``/``errmsg`` are added by the
dispatcher), or raise :class:`ApiError` with a real WeCom errcode.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.emulator.records import App
from bot.emulator.state import EmulatorState
from scrm.errors import LianyiError

# errcode → errmsg as WeCom words them (the hint and help link are appended per response).
ERRMSG: dict[int, str] = {
    -1: "system busy",
    0: "ok",
    40001: "invalid credential",
    40003: "invalid userid",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40050: "chatid not found",
    40056: "invalid agentid",
    40058: "invalid Request Parameter",
    40068: "invalid tagid",
    40071: "UserTag Name Already Exist",
    40096: "invalid external userid",
    40126: "corp tag count exceed limit",
    40128: "customer transfer too often",
    40129: "customer transfer in progress",
    41001: "access_token missing",
    41050: "invalid welcome_code",
    41051: "externaluser has started chatting",
    42001: "access_token expired",
    45009: "api freq out of limit",
    47001: "data format error",
    48002: "api forbidden",
    60011: "no privilege to access/modify contact/party/agent",
    60111: "userid not found",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
    95000: "invalid open_kfid",
    95007: "invalid msg token",
}
_HINTS = itertools.count(1)


def errmsg(errcode: int) -> str:
    base = ERRMSG.get(errcode, "error")
    if errcode == 0:
        return base
    return (
        f"{base}, hint: [emu{next(_HINTS):08d}], more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )


class ApiError(LianyiError):
    """An API answer with a non-zero errcode."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(f"{errcode}: {detail or ERRMSG.get(errcode, 'error')}")
        self.errcode = errcode


@dataclass(frozen=True, slots=True)
class ApiCall:
    state: EmulatorState
    api: str
    query: Mapping[str, str]
    body: dict[str, Any]
    app: App | None  # the app whose token was presented (None for gettoken)

    def arg(self, name: str, default: Any = None) -> Any:
        """A parameter from the JSON body, else the query string."""
        if name in self.body:
            return self.body[name]
        return self.query.get(name, default)

    def text(self, name: str, *, required: bool = True) -> str:
        value = self.arg(name, "")
        if not isinstance(value, str) or (required and not value):
            raise ApiError(40058, f"{name} must be a non-empty string")
        return value

    def int_arg(self, name: str, default: int) -> int:
        value = self.arg(name, default)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ApiError(40058, f"{name} must be an integer") from None

    def str_list(self, name: str) -> list[str]:
        value = self.arg(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(40058, f"{name} must be a list of strings")
        return value


Handler = Callable[[ApiCall], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Route:
    api: str  # path under /cgi-bin/
    method: str
    handler: Handler
    needs_token: bool
    contact_api: bool  # a customer-contact API (the app must be allowed to call them)


ROUTES: dict[str, Route] = {}


def route(
    api: str, method: str = "POST", *, needs_token: bool = True, contact_api: bool = False
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if api in ROUTES:
            raise ValueError(f"API {api} registered twice")
        ROUTES[api] = Route(api, method, handler, needs_token, contact_api)
        return handler

    return register


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"emu:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(40058, "invalid cursor") from None
    if prefix != "emu" or offset < 0:
        raise ApiError(40058, "invalid cursor")
    return offset


def page(items: list[Any], cursor: str, limit: int) -> tuple[list[Any], str]:
    """Cursor paging over a stable list; ``next_cursor`` is opaque and empty on the last page."""
    start = _decode_cursor(cursor) if cursor else 0
    end = start + limit
    return items[start:end], (_encode_cursor(end) if end < len(items) else "")
