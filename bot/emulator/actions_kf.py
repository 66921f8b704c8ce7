"""World actions for 微信客服 (kf): a customer writes to a kf account, a servicer answers.

Each message is appended to the account's history (what ``kf/sync_msg`` pages through) and the action
returns the ``kf_msg_or_event`` callback fields, whose Token lets Lianyi page without the strict frequency
limit for 10 minutes. WeCom's callback carries no message content: only ToUserName, CreateTime, MsgType,
Event, Token and OpenKfId.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from bot.emulator.base import Fields, StateData, WorldError

KF_TOKEN_TTL = 600  # seconds a callback's sync token stays valid
ORIGIN_CUSTOMER, ORIGIN_SYSTEM, ORIGIN_SERVICER = 3, 4, 5


@dataclass(slots=True)
class KfAccount:
    open_kfid: str
    name: str
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class KfStore:
    accounts: dict[str, KfAccount] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → (open_kfid, expires at)
    serial: int = 0


class KfActions(StateData):
    _kf_store: KfStore | None = None

    @property
    def kf(self) -> KfStore:
        if self._kf_store is None:
            self._kf_store = KfStore()
        return self._kf_store

    def add_kf_account(self, open_kfid: str, name: str) -> KfAccount:
        """Set-up: a customer-service account (no callback)."""
        account = KfAccount(open_kfid=open_kfid, name=name)
        self.kf.accounts[open_kfid] = account
        return account

    def require_kf_account(self, open_kfid: str) -> KfAccount:
        account = self.kf.accounts.get(open_kfid)
        if account is None:
            raise WorldError(f"no kf account {open_kfid!r}")
        return account

    def kf_customer_message(self, open_kfid: str, external_userid: str, text: str) -> Fields:
        """A WeChat user writes ``text`` to the kf account; returns the kf_msg_or_event callback fields."""
        self._append_kf(open_kfid, external_userid, ORIGIN_CUSTOMER, {"msgtype": "text", "text": {"content": text}})
        return self.kf_callback(open_kfid)

    def kf_servicer_message(self, open_kfid: str, external_userid: str, servicer_userid: str, text: str) -> Fields:
        """A servicer answers in the kf workbench; the reply shows up in sync_msg with origin 5."""
        self.require_staff(servicer_userid)
        extra = {"servicer_userid": servicer_userid, "msgtype": "text", "text": {"content": text}}
        self._append_kf(open_kfid, external_userid, ORIGIN_SERVICER, extra)
        return self.kf_callback(open_kfid)

    def kf_enter_session(self, open_kfid: str, external_userid: str) -> Fields:
        """The user opens the kf chat (a system event, origin 4, ``enter_session``)."""
        event = {"event_type": "enter_session", "open_kfid": open_kfid, "external_userid": external_userid}
        self._append_kf(open_kfid, external_userid, ORIGIN_SYSTEM, {"msgtype": "event", "event": event})
        return self.kf_callback(open_kfid)

    def kf_callback(self, open_kfid: str) -> Fields:
        """The callback WeCom sends when messages are waiting, with a fresh sync token."""
        self.require_kf_account(open_kfid)
        token = "ENC" + secrets.token_hex(16)
        self.kf.tokens[token] = (open_kfid, self.now() + KF_TOKEN_TTL)
        return {
            "ToUserName": self.corp_id,
            "CreateTime": self.now_int(),
            "MsgType": "event",
            "Event": "kf_msg_or_event",
            "Token": token,
            "OpenKfId": open_kfid,
        }

    def kf_token_valid(self, token: str, open_kfid: str) -> bool:
        entry = self.kf.tokens.get(token)
        return entry is not None and entry[0] == open_kfid and self.now() < entry[1]

    def _append_kf(self, open_kfid: str, external_userid: str, origin: int, extra: dict[str, Any]) -> None:
        account = self.require_kf_account(open_kfid)
        self.kf.serial += 1
        message: dict[str, Any] = {
            "msgid": f"kfmsg{self.kf.serial:08d}{secrets.token_hex(4)}",
            "open_kfid": open_kfid,
            "external_userid": external_userid,
            "send_time": self.now_int(),
            "origin": origin,
        }
        message.update(extra)
        account.messages.append(message)
