"""Typed WeCom callback events.

The edge turns the decrypted XML into a flat ``fields`` mapping (element name → text; nested lists such as
``MemChangeList`` → list of str) and calls :func:`parse_event`. The same mapping is what the inbox stores
as the payload, so a worker rebuilds the identical typed event with :func:`parse_event` again.

Every event knows its ``dedup_key`` (identity, not arrival: WeCom retries carry the same key, two customers
added in the same second do not) and its ``ordering_key`` (events with the same key are handled in order).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

Fields = Mapping[str, Any]


def _s(fields: Fields, name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return str(value)


def _i(fields: Fields, name: str) -> int | None:
    raw = _s(fields, name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _list(fields: Fields, name: str) -> list[str]:
    """Always a list: a single ``<Item>`` arrives as one str, several as a list, none as missing."""
    value = fields.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in (part.strip() for part in value.split(",")) if v]
    if isinstance(value, Mapping):
        inner = value.get("Item", [])
        return _list({"x": inner}, "x")
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class WeComEvent:
    """Base of every callback event. ``fields`` keeps everything WeCom sent."""

    event_type: ClassVar[str] = "unknown"

    fields: dict[str, Any] = field(repr=False, compare=False)
    corp_id: str
    create_time: int

    @property
    def dedup_key(self) -> str:
        return "evt:" + _digest(json.dumps(self.fields, sort_keys=True, ensure_ascii=False))

    @property
    def ordering_key(self) -> str:
        return "corp"

    def to_payload(self) -> dict[str, Any]:
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class UnknownEvent(WeComEvent):
    """Anything we do not model yet. Stored and logged, never dropped."""

    event_type: ClassVar[str] = "unknown"
    msg_type: str = ""
    event: str = ""
    change_type: str = ""

    @property
    def ordering_key(self) -> str:
        return "unknown"


# ---- customer contact (change_external_contact) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalContactEvent(WeComEvent):
    change_type: ClassVar[str] = ""
    userid: str = ""
    external_userid: str = ""

    @property
    def dedup_key(self) -> str:
        return f"ec:{self.change_type}:{self.userid}:{self.external_userid}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return f"contact:{self.external_userid}"


@dataclass(frozen=True, slots=True)
class ContactAdded(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.added"
    change_type: ClassVar[str] = "add_external_contact"
    state: str = ""
    welcome_code: str = ""


@dataclass(frozen=True, slots=True)
class ContactHalfAdded(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.half_added"
    change_type: ClassVar[str] = "add_half_external_contact"
    state: str = ""
    welcome_code: str = ""


@dataclass(frozen=True, slots=True)
class ContactEdited(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.edited"
    change_type: ClassVar[str] = "edit_external_contact"


@dataclass(frozen=True, slots=True)
class ContactDeletedByStaff(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.deleted_by_staff"
    change_type: ClassVar[str] = "del_external_contact"
    source: str = ""  # DELETE_BY_TRANSFER when a transfer caused it


@dataclass(frozen=True, slots=True)
class StaffDeletedByContact(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.deleted_staff"
    change_type: ClassVar[str] = "del_follow_user"


@dataclass(frozen=True, slots=True)
class TransferFailed(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.transfer_failed"
    change_type: ClassVar[str] = "transfer_fail"
    fail_reason: str = ""  # customer_refused | customer_limit_exceed


# ---- customer groups (change_external_chat) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupEvent(WeComEvent):
    change_type: ClassVar[str] = ""
    chat_id: str = ""

    @property
    def dedup_key(self) -> str:
        return f"chat:{self.change_type}:{self.chat_id}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return f"group:{self.chat_id}"


@dataclass(frozen=True, slots=True)
class GroupCreated(GroupEvent):
    event_type: ClassVar[str] = "group.created"
    change_type: ClassVar[str] = "create"


@dataclass(frozen=True, slots=True)
class GroupDismissed(GroupEvent):
    event_type: ClassVar[str] = "group.dismissed"
    change_type: ClassVar[str] = "dismiss"


@dataclass(frozen=True, slots=True)
class GroupUpdated(GroupEvent):
    event_type: ClassVar[str] = "group.updated"
    change_type: ClassVar[str] = "update"
    update_detail: str = ""  # add_member | del_member | change_owner | change_name | change_notice
    join_scene: int | None = None  # 0 invited, 3 via QR code
    quit_scene: int | None = None  # 0 left, 1 removed
    mem_change_cnt: int | None = None
    mem_change_list: tuple[str, ...] = ()
    last_mem_ver: str = ""
    cur_mem_ver: str = ""

    @property
    def dedup_key(self) -> str:
        members = _digest(*self.mem_change_list) if self.mem_change_list else ""
        return f"chat:update:{self.chat_id}:{self.update_detail}:{self.create_time}:{self.cur_mem_ver}:{members}"


# ---- corp tags (change_external_tag) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagEvent(WeComEvent):
    change_type: ClassVar[str] = ""
    tag_id: str = ""
    tag_type: str = ""  # tag | tag_group
    strategy_id: int | None = None

    @property
    def dedup_key(self) -> str:
        return f"tag:{self.change_type}:{self.tag_type}:{self.tag_id}:{self.strategy_id or ''}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return "tags"


@dataclass(frozen=True, slots=True)
class TagCreated(TagEvent):
    event_type: ClassVar[str] = "tag.created"
    change_type: ClassVar[str] = "create"


@dataclass(frozen=True, slots=True)
class TagUpdated(TagEvent):
    event_type: ClassVar[str] = "tag.updated"
    change_type: ClassVar[str] = "update"


@dataclass(frozen=True, slots=True)
class TagDeleted(TagEvent):
    event_type: ClassVar[str] = "tag.deleted"
    change_type: ClassVar[str] = "delete"


@dataclass(frozen=True, slots=True)
class TagShuffled(TagEvent):
    """Tag order changed; ``tag_id`` is a tag group id, or empty for all groups."""

    event_type: ClassVar[str] = "tag.shuffled"
    change_type: ClassVar[str] = "shuffle"


# ---- messages and kf --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppMessage(WeComEvent):
    """A message a staff member sent to the self-built app (text, image, voice, …)."""

    event_type: ClassVar[str] = "message.app"
    msg_type: str = ""
    msg_id: str = ""
    from_user: str = ""
    agent_id: str = ""
    content: str = ""

    @property
    def dedup_key(self) -> str:
        if self.msg_id:
            return f"msg:{self.msg_id}"
        return f"msg:{self.from_user}:{self.create_time}:{_digest(self.content)}"

    @property
    def ordering_key(self) -> str:
        return f"user:{self.from_user}"


@dataclass(frozen=True, slots=True)
class KfMsgOrEvent(WeComEvent):
    """微信客服: new messages are waiting; fetch them with kf/sync_msg using ``token``."""

    event_type: ClassVar[str] = "kf.msg_or_event"
    token: str = ""
    open_kfid: str = ""

    @property
    def dedup_key(self) -> str:
        return f"kf:{self.open_kfid}:{self.token}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return f"kf:{self.open_kfid}"


# ---- registry ---------------------------------------------------------------------------------------

E = TypeVar("E", bound=WeComEvent)
Builder = Callable[[dict[str, Any], str, int], WeComEvent]
_REGISTRY: dict[tuple[str, str, str], Builder] = {}


def _register(msg_type: str, event: str, change_type: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        _REGISTRY[(msg_type, event, change_type)] = fn
        return fn

    return deco


def _contact_builder(cls: type[ExternalContactEvent]) -> Builder:
    def build(f: dict[str, Any], corp: str, ts: int) -> WeComEvent:
        base: dict[str, Any] = {
            "fields": f,
            "corp_id": corp,
            "create_time": ts,
            "userid": _s(f, "UserID"),
            "external_userid": _s(f, "ExternalUserID"),
        }
        if cls in (ContactAdded, ContactHalfAdded):
            base.update(state=_s(f, "State"), welcome_code=_s(f, "WelcomeCode"))
        elif cls is ContactDeletedByStaff:
            base.update(source=_s(f, "Source"))
        elif cls is TransferFailed:
            base.update(fail_reason=_s(f, "FailReason"))
        return cls(**base)

    return build


for _cls in (
    ContactAdded,
    ContactHalfAdded,
    ContactEdited,
    ContactDeletedByStaff,
    StaffDeletedByContact,
    TransferFailed,
):
    _REGISTRY[("event", "change_external_contact", _cls.change_type)] = _contact_builder(_cls)


def _group_builder(cls: type[GroupEvent]) -> Builder:
    def build(f: dict[str, Any], corp: str, ts: int) -> WeComEvent:
        base: dict[str, Any] = {"fields": f, "corp_id": corp, "create_time": ts, "chat_id": _s(f, "ChatId")}
        if cls is GroupUpdated:
            base.update(
                update_detail=_s(f, "UpdateDetail"),
                join_scene=_i(f, "JoinScene"),
                quit_scene=_i(f, "QuitScene"),
                mem_change_cnt=_i(f, "MemChangeCnt"),
                mem_change_list=tuple(_list(f, "MemChangeList")),
                last_mem_ver=_s(f, "LastMemVer"),
                cur_mem_ver=_s(f, "CurMemVer"),
            )
        return cls(**base)

    return build


for _gcls in (GroupCreated, GroupDismissed, GroupUpdated):
    _REGISTRY[("event", "change_external_chat", _gcls.change_type)] = _group_builder(_gcls)


def _tag_builder(cls: type[TagEvent]) -> Builder:
    def build(f: dict[str, Any], corp: str, ts: int) -> WeComEvent:
        return cls(
            fields=f,
            corp_id=corp,
            create_time=ts,
            tag_id=_s(f, "Id"),
            tag_type=_s(f, "TagType"),
            strategy_id=_i(f, "StrategyId"),
        )

    return build


for _tcls in (TagCreated, TagUpdated, TagDeleted, TagShuffled):
    _REGISTRY[("event", "change_external_tag", _tcls.change_type)] = _tag_builder(_tcls)


@_register("event", "kf_msg_or_event", "")
def _kf(f: dict[str, Any], corp: str, ts: int) -> WeComEvent:
    return KfMsgOrEvent(fields=f, corp_id=corp, create_time=ts, token=_s(f, "Token"), open_kfid=_s(f, "OpenKfId"))


def _app_message(f: dict[str, Any], corp: str, ts: int) -> WeComEvent:
    return AppMessage(
        fields=f,
        corp_id=corp,
        create_time=ts,
        msg_type=_s(f, "MsgType"),
        msg_id=_s(f, "MsgId"),
        from_user=_s(f, "FromUserName"),
        agent_id=_s(f, "AgentID"),
        content=_s(f, "Content"),
    )


_MESSAGE_TYPES = frozenset({"text", "image", "voice", "video", "location", "link"})


def parse_event(fields: Mapping[str, Any]) -> WeComEvent:
    """Build the typed event for a decrypted callback; anything unmodelled becomes :class:`UnknownEvent`."""
    f = dict(fields)
    corp = _s(f, "ToUserName")
    ts = _i(f, "CreateTime") or 0
    msg_type = _s(f, "MsgType")
    event = _s(f, "Event")
    change_type = _s(f, "ChangeType")
    builder = _REGISTRY.get((msg_type, event, change_type))
    if builder is not None:
        return builder(f, corp, ts)
    if msg_type in _MESSAGE_TYPES and _s(f, "MsgId"):
        return _app_message(f, corp, ts)
    return UnknownEvent(fields=f, corp_id=corp, create_time=ts, msg_type=msg_type, event=event, change_type=change_type)


def known_event_types() -> list[str]:
    """Every ``event_type`` the router may see (used to check handler registrations)."""
    types = {UnknownEvent.event_type, AppMessage.event_type}
    for builder in _REGISTRY.values():
        sample = builder({}, "", 0)
        types.add(sample.event_type)
    return sorted(types)
