"""Typed WeCom callback events.

The edge turns the decrypted XML into a flat ``fields`` mapping (element name → text; nested lists such as
``MemChangeList`` → list of str, see :mod:`bot.edge.event_fields`) and calls :func:`parse_event`, which picks the
event class by the callback's ``(MsgType, Event, ChangeType)`` and lets it read its attributes. Each class declares
where it comes from (``callback_key``) and what it reads (``reads``: attribute → element, reader), so
there is no table of builders to keep in step with the classes. The inbox stores the fields with the event type;
the worker rebuilds the same event with :func:`rebuild_event` from those two, without parsing XML or classifying
the callback again.

Every event knows its ``dedup_key`` (identity, not arrival: WeCom retries carry the same key, two customers
added in the same second do not) and its ``ordering_key`` (events with the same key are handled in order).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bot.edge.event_fields import Fields, Reader, digest, integer, item_tuple, text

Reads = Mapping[str, tuple[str, Reader]]


@dataclass(frozen=True, slots=True)
class WeComEvent:
    """Base of every callback event. ``fields`` keeps everything WeCom sent."""

    event_type: ClassVar[str] = "unknown"
    reads: ClassVar[Reads] = {}  # attribute → (element, reader)

    fields: dict[str, Any] = field(repr=False, compare=False)
    corp_id: str
    create_time: int

    @property
    def dedup_key(self) -> str:
        return "evt:" + digest(json.dumps(self.fields, sort_keys=True, ensure_ascii=False))

    @property
    def ordering_key(self) -> str:
        return "corp"

    def to_payload(self) -> dict[str, Any]:
        return dict(self.fields)

    @classmethod
    def callback_key(cls) -> tuple[str, str, str] | None:
        """``(MsgType, Event, ChangeType)`` of the callbacks this class models; None when no one key does."""
        return None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> WeComEvent:
        """This event with the attributes its ``reads`` declare."""
        f = dict(fields)
        values = {attribute: read(f, element) for attribute, (element, read) in cls.reads.items()}
        return cls(fields=f, corp_id=text(f, "ToUserName"), create_time=integer(f, "CreateTime") or 0, **values)


@dataclass(frozen=True, slots=True)
class UnknownEvent(WeComEvent):
    """Anything we do not model yet. Stored and logged, never dropped."""

    event_type: ClassVar[str] = "unknown"
    reads: ClassVar[Reads] = {
        "msg_type": ("MsgType", text),
        "event": ("Event", text),
        "change_type": ("ChangeType", text),
    }
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
    reads: ClassVar[Reads] = {"userid": ("UserID", text), "external_userid": ("ExternalUserID", text)}
    userid: str = ""
    external_userid: str = ""

    @property
    def dedup_key(self) -> str:
        return f"ec:{self.change_type}:{self.userid}:{self.external_userid}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return f"contact:{self.external_userid}"

    @classmethod
    def callback_key(cls) -> tuple[str, str, str] | None:
        return ("event", "change_external_contact", cls.change_type)


@dataclass(frozen=True, slots=True)
class ContactAdded(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.added"
    change_type: ClassVar[str] = "add_external_contact"
    reads: ClassVar[Reads] = {
        **ExternalContactEvent.reads,
        "state": ("State", text),
        "welcome_code": ("WelcomeCode", text),
    }
    state: str = ""
    welcome_code: str = ""


@dataclass(frozen=True, slots=True)
class ContactHalfAdded(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.half_added"
    change_type: ClassVar[str] = "add_half_external_contact"
    reads: ClassVar[Reads] = {
        **ExternalContactEvent.reads,
        "state": ("State", text),
        "welcome_code": ("WelcomeCode", text),
    }
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
    reads: ClassVar[Reads] = {**ExternalContactEvent.reads, "source": ("Source", text)}
    source: str = ""  # DELETE_BY_TRANSFER when a transfer caused it


@dataclass(frozen=True, slots=True)
class StaffDeletedByContact(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.deleted_staff"
    change_type: ClassVar[str] = "del_follow_user"


@dataclass(frozen=True, slots=True)
class TransferFailed(ExternalContactEvent):
    event_type: ClassVar[str] = "contact.transfer_failed"
    change_type: ClassVar[str] = "transfer_fail"
    reads: ClassVar[Reads] = {**ExternalContactEvent.reads, "fail_reason": ("FailReason", text)}
    fail_reason: str = ""  # customer_refused | customer_limit_exceed


# ---- customer groups (change_external_chat) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupEvent(WeComEvent):
    change_type: ClassVar[str] = ""
    reads: ClassVar[Reads] = {"chat_id": ("ChatId", text)}
    chat_id: str = ""

    @property
    def dedup_key(self) -> str:
        return f"chat:{self.change_type}:{self.chat_id}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return f"group:{self.chat_id}"

    @classmethod
    def callback_key(cls) -> tuple[str, str, str] | None:
        return ("event", "change_external_chat", cls.change_type)


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
    reads: ClassVar[Reads] = {
        **GroupEvent.reads,
        "update_detail": ("UpdateDetail", text),
        "join_scene": ("JoinScene", integer),
        "quit_scene": ("QuitScene", integer),
        "mem_change_cnt": ("MemChangeCnt", integer),
        "mem_change_list": ("MemChangeList", item_tuple),
        "last_mem_ver": ("LastMemVer", text),
        "cur_mem_ver": ("CurMemVer", text),
    }
    update_detail: str = ""  # add_member | del_member | change_owner | change_name | change_notice
    join_scene: int | None = None  # 0 invited, 3 via QR code
    quit_scene: int | None = None  # 0 left, 1 removed
    mem_change_cnt: int | None = None
    mem_change_list: tuple[str, ...] = ()
    last_mem_ver: str = ""
    cur_mem_ver: str = ""

    @property
    def dedup_key(self) -> str:
        members = digest(*self.mem_change_list) if self.mem_change_list else ""
        return f"chat:update:{self.chat_id}:{self.update_detail}:{self.create_time}:{self.cur_mem_ver}:{members}"


# ---- corp tags (change_external_tag) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagEvent(WeComEvent):
    change_type: ClassVar[str] = ""
    reads: ClassVar[Reads] = {
        "tag_id": ("Id", text),
        "tag_type": ("TagType", text),
        "strategy_id": ("StrategyId", integer),
    }
    tag_id: str = ""
    tag_type: str = ""  # tag | tag_group
    strategy_id: int | None = None

    @property
    def dedup_key(self) -> str:
        return f"tag:{self.change_type}:{self.tag_type}:{self.tag_id}:{self.strategy_id or ''}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return "tags"

    @classmethod
    def callback_key(cls) -> tuple[str, str, str] | None:
        return ("event", "change_external_tag", cls.change_type)


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
    kinds: ClassVar[frozenset[str]] = frozenset({"text", "image", "voice", "video", "location", "link"})
    reads: ClassVar[Reads] = {
        "msg_type": ("MsgType", text),
        "msg_id": ("MsgId", text),
        "from_user": ("FromUserName", text),
        "agent_id": ("AgentID", text),
        "content": ("Content", text),
    }
    msg_type: str = ""
    msg_id: str = ""
    from_user: str = ""
    agent_id: str = ""
    content: str = ""

    @property
    def dedup_key(self) -> str:
        if self.msg_id:
            return f"msg:{self.msg_id}"
        return f"msg:{self.from_user}:{self.create_time}:{digest(self.content)}"

    @property
    def ordering_key(self) -> str:
        return f"user:{self.from_user}"


@dataclass(frozen=True, slots=True)
class KfMsgOrEvent(WeComEvent):
    """微信客服: new messages are waiting; fetch them with kf/sync_msg using ``token``."""

    event_type: ClassVar[str] = "kf.msg_or_event"
    reads: ClassVar[Reads] = {"token": ("Token", text), "open_kfid": ("OpenKfId", text)}
    token: str = ""
    open_kfid: str = ""

    @property
    def dedup_key(self) -> str:
        return f"kf:{self.open_kfid}:{self.token}:{self.create_time}"

    @property
    def ordering_key(self) -> str:
        return f"kf:{self.open_kfid}"

    @classmethod
    def callback_key(cls) -> tuple[str, str, str] | None:
        return ("event", "kf_msg_or_event", "")


# ---- from callback fields to the typed event ---------------------------------------------------------

EVENT_CLASSES: tuple[type[WeComEvent], ...] = (
    ContactAdded,
    ContactHalfAdded,
    ContactEdited,
    ContactDeletedByStaff,
    StaffDeletedByContact,
    TransferFailed,
    GroupCreated,
    GroupDismissed,
    GroupUpdated,
    TagCreated,
    TagUpdated,
    TagDeleted,
    TagShuffled,
    KfMsgOrEvent,
    AppMessage,
    UnknownEvent,
)
_BY_CALLBACK = {key: cls for cls in EVENT_CLASSES if (key := cls.callback_key()) is not None}
_BY_TYPE = {cls.event_type: cls for cls in EVENT_CLASSES}


def event_class(fields: Fields) -> type[WeComEvent]:
    """The class that models a callback: by ``(MsgType, Event, ChangeType)``, a message by its MsgType and
    MsgId, anything else :class:`UnknownEvent`."""
    msg_type = text(fields, "MsgType")
    modelled = _BY_CALLBACK.get((msg_type, text(fields, "Event"), text(fields, "ChangeType")))
    if modelled is not None:
        return modelled
    if msg_type in AppMessage.kinds and text(fields, "MsgId"):
        return AppMessage
    return UnknownEvent


def parse_event(fields: Mapping[str, Any]) -> WeComEvent:
    """Build the typed event for a decrypted callback; anything unmodelled becomes :class:`UnknownEvent`."""
    return event_class(fields).from_fields(fields)


def rebuild_event(event_type: str, payload: Mapping[str, Any]) -> WeComEvent:
    """The event the edge built, from what the inbox stored (its ``event_type`` and ``to_payload()``): the class
    is the edge's choice, not worked out again; a type this build does not know becomes :class:`UnknownEvent`."""
    return _BY_TYPE.get(event_type, UnknownEvent).from_fields(payload)


def known_event_types() -> list[str]:
    """Every ``event_type`` the router may see (used to check handler registrations)."""
    return sorted(_BY_TYPE)
