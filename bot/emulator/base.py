"""The data every part of the emulated corp shares, and the helpers world actions build on."""

from __future__ import annotations

import hashlib
import itertools
import random
import string
from collections.abc import Iterable
from typing import Any

from bot.emulator.clock import Clock, SystemClock
from bot.emulator.counters import Counters
from bot.emulator.faults import FaultPlan
from bot.emulator.groupmsg_records import GroupMsg, GroupSendQuota
from bot.emulator.limits import ApiRateLimiter, MemberMessageQuota
from bot.emulator.records import (
    App,
    ContactWay,
    CorpTag,
    CustomerTransfer,
    Dealer,
    ExternalContact,
    Follow,
    Group,
    StaffMember,
    TagGroup,
    TransferRules,
)
from bot.emulator.tokens import TokenStore, WelcomeCodes
from scrm.errors import LianyiError

Fields = dict[str, Any]

_ALPHABET = string.ascii_letters + string.digits
ID_PREFIXES = {"contact": "wm", "group": "wr", "tag": "et", "tag_group": "et", "way": "cw"}


class WorldError(LianyiError):
    """A world action that cannot happen in WeCom (unknown staff, no such group, …)."""


def make_id(corp_id: str, kind: str, serial: int) -> str:
    """A WeCom-looking id (``wm…`` customer, ``wr…`` group, ``et…`` tag), deterministic per corp/kind/serial."""
    digest = hashlib.sha256(f"{corp_id}:{kind}:{serial}".encode()).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(30):
        number, rest = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[rest])
    return ID_PREFIXES.get(kind.removeprefix("scenario_"), "id") + "".join(chars)


class StateData:
    """Stores and services of one emulated corp; world actions and the API read and change them."""

    def __init__(self, corp_id: str, *, clock: Clock | None = None, seed: int = 0) -> None:
        self.corp_id = corp_id
        self.clock: Clock = clock or SystemClock()
        self.apps: dict[str, App] = {}
        self.dealers: dict[str, Dealer] = {}
        self.staff: dict[str, StaffMember] = {}
        self.contacts: dict[str, ExternalContact] = {}
        self.follows: dict[tuple[str, str], Follow] = {}  # (external_userid, userid); change via put/drop_follow
        self._follows_by_contact: dict[str, dict[str, Follow]] = {}
        self._follows_by_staff: dict[str, dict[str, Follow]] = {}
        self.groups: dict[str, Group] = {}
        self.tag_groups: dict[str, TagGroup] = {}
        self.contact_ways: dict[str, ContactWay] = {}
        self.tokens = TokenStore(corp_id)
        self.welcome_codes = WelcomeCodes(corp_id)
        self.rate_limits = ApiRateLimiter()
        self.message_quota = MemberMessageQuota()
        self.faults = FaultPlan(seed)
        self.counters = Counters()
        self.rng = random.Random(seed)
        self.issue_welcome_codes = True  # False = as if an admin welcome were configured for everyone
        self.follow_page_size = 500  # externalcontact/get pages follow_user beyond this many
        self.max_corp_tags = 3000
        self.recent_app_messages: dict[str, float] = {}  # duplicate-check key → last send time
        self.group_msgs: dict[str, GroupMsg] = {}  # add_msg_template tasks by msgid
        self.groupmsg_quota = GroupSendQuota()  # set .mode to change WeCom's per-recipient rule
        self.groupmsg_auto_confirm = True  # senders confirm group-send tasks as soon as they are created
        self.transfers: list[CustomerTransfer] = []  # accepted 在职继承 transfers, oldest first
        self.transfer_rules = TransferRules()  # set .delay_seconds to make the takeover faster in tests
        self.transfer_callbacks: list[Fields] = []  # settled transfers' callbacks not yet handed out
        self._serials: dict[str, itertools.count[int]] = {}

    # ---- time and ids ------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def now_int(self) -> int:
        return int(self.clock.now())

    def new_id(self, kind: str) -> str:
        serials = self._serials.setdefault(kind, itertools.count(1))
        while True:
            candidate = make_id(self.corp_id, kind, next(serials))
            if candidate not in self.contacts and candidate not in self.groups and self.find_tag(candidate) is None:
                return candidate

    # ---- setup (no callbacks: the world as it was before Lianyi looked) ------------------------------

    def add_app(self, secret: str, agent_id: int, *, contact_api: bool = True) -> App:
        app = App(secret=secret, agent_id=agent_id, contact_api=contact_api)
        self.apps[secret] = app
        return app

    def add_dealer(self, code: str, name: str, city: str = "") -> Dealer:
        dealer = Dealer(code=code, name=name, city=city)
        self.dealers[code] = dealer
        return dealer

    def add_staff(self, userid: str, name: str, dealer_code: str = "", **extra: Any) -> StaffMember:
        if dealer_code and dealer_code not in self.dealers:
            raise WorldError(f"staff {userid}: unknown dealer {dealer_code}")
        member = StaffMember(userid=userid, name=name, dealer_code=dealer_code, **extra)
        self.staff[userid] = member
        return member

    # ---- lookups -----------------------------------------------------------------------------------

    def require_staff(self, userid: str) -> StaffMember:
        member = self.staff.get(userid)
        if member is None:
            raise WorldError(f"unknown staff member {userid!r}")
        return member

    def require_follow(self, userid: str, external_userid: str) -> Follow:
        follow = self.follows.get((external_userid, userid))
        if follow is None:
            raise WorldError(f"{userid} has no relation with {external_userid}")
        return follow

    def require_group(self, chat_id: str) -> Group:
        group = self.groups.get(chat_id)
        if group is None or group.dismissed:
            raise WorldError(f"no live group {chat_id!r}")
        return group

    def follows_of_contact(self, external_userid: str) -> list[Follow]:
        return list(self._follows_by_contact.get(external_userid, {}).values())

    def follows_of_staff(self, userid: str) -> list[Follow]:
        return list(self._follows_by_staff.get(userid, {}).values())

    def put_follow(self, follow: Follow) -> None:
        self.follows[(follow.external_userid, follow.userid)] = follow
        self._follows_by_contact.setdefault(follow.external_userid, {})[follow.userid] = follow
        self._follows_by_staff.setdefault(follow.userid, {})[follow.external_userid] = follow

    def drop_follow(self, userid: str, external_userid: str) -> None:
        del self.follows[(external_userid, userid)]
        del self._follows_by_contact[external_userid][userid]
        del self._follows_by_staff[userid][external_userid]

    def find_tag(self, tag_id: str) -> CorpTag | None:
        for group in self.tag_groups.values():
            tag = group.tags.get(tag_id)
            if tag is not None:
                return tag
        return None

    def all_tags(self) -> Iterable[CorpTag]:
        for group in self.tag_groups.values():
            yield from group.tags.values()

    # ---- callbacks ---------------------------------------------------------------------------------

    def event_fields(self, event: str, change_type: str, **fields: Any) -> Fields:
        """The plaintext fields of one callback, in WeCom's element order."""
        base: Fields = {
            "ToUserName": self.corp_id,
            "FromUserName": "sys",
            "CreateTime": self.now_int(),
            "MsgType": "event",
            "Event": event,
            "ChangeType": change_type,
        }
        base.update(fields)
        return base
