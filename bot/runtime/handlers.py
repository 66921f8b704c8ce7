"""From typed callback events to the scrm sync services: one transaction per event, then wake the outbox.

Every event type of :mod:`bot.edge.events` has exactly one entry here: a service adapter in ``_SERVICES``
(state changes + outbox commands, committed together), a message ingester (app messages are stored; a kf
callback runs a kf/sync_msg pass for its open_kfid, see :mod:`bot.runtime.kf_sync`) or a log-only entry in
``_LOG_ONLY`` (unknown events are kept in the inbox).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.edge.events import (
    AppMessage,
    ContactAdded,
    ContactDeletedByStaff,
    ContactEdited,
    ContactHalfAdded,
    GroupCreated,
    GroupDismissed,
    GroupUpdated,
    KfMsgOrEvent,
    StaffDeletedByContact,
    TagCreated,
    TagDeleted,
    TagEvent,
    TagShuffled,
    TagUpdated,
    TransferFailed,
    UnknownEvent,
    WeComEvent,
)
from bot.runtime.kf_sync import KfSync
from bot.runtime.router import HandlerContext, Router
from scrm.db import write_transaction
from scrm.errors import LianyiError
from scrm.intent.ingest import IncomingMessage, store_message
from scrm.sync import contacts, groups, tags

log = logging.getLogger(__name__)

E = TypeVar("E", bound=WeComEvent)
Apply = Callable[[AsyncSession, Any, HandlerContext], Awaitable[None]]
Handler = Callable[[WeComEvent, HandlerContext], Awaitable[None]]


def event_time(event: WeComEvent, ctx: HandlerContext) -> datetime:
    """The callback's CreateTime (UTC); the handler's clock when WeCom sent none."""
    if event.create_time > 0:
        return datetime.fromtimestamp(event.create_time, UTC)
    return ctx.now()


def corp_of(event: WeComEvent, ctx: HandlerContext) -> str:
    return event.corp_id or ctx.settings.corp_id


# ---- adapters: event fields → service arguments ------------------------------------------------------


async def _contact_added(session: AsyncSession, event: ContactAdded | ContactHalfAdded, ctx: HandlerContext) -> None:
    await contacts.on_contact_added(
        session,
        corp_of(event, ctx),
        userid=event.userid,
        external_userid=event.external_userid,
        state=event.state,
        welcome_code=event.welcome_code,
        event_time=event_time(event, ctx),
        half=isinstance(event, ContactHalfAdded),
        hooks=ctx.services,
    )


async def _contact_edited(session: AsyncSession, event: ContactEdited, ctx: HandlerContext) -> None:
    await contacts.on_contact_edited(
        session,
        corp_of(event, ctx),
        userid=event.userid,
        external_userid=event.external_userid,
        event_time=event_time(event, ctx),
    )


async def _deleted_by_staff(session: AsyncSession, event: ContactDeletedByStaff, ctx: HandlerContext) -> None:
    await contacts.on_deleted_by_staff(
        session,
        corp_of(event, ctx),
        userid=event.userid,
        external_userid=event.external_userid,
        source=event.source,
        event_time=event_time(event, ctx),
        hooks=ctx.services,
    )


async def _staff_deleted(session: AsyncSession, event: StaffDeletedByContact, ctx: HandlerContext) -> None:
    await contacts.on_staff_deleted_by_contact(
        session,
        corp_of(event, ctx),
        userid=event.userid,
        external_userid=event.external_userid,
        event_time=event_time(event, ctx),
        hooks=ctx.services,
    )


async def _transfer_failed(session: AsyncSession, event: TransferFailed, ctx: HandlerContext) -> None:
    await contacts.on_transfer_failed(
        session,
        corp_of(event, ctx),
        userid=event.userid,
        external_userid=event.external_userid,
        fail_reason=event.fail_reason,
        event_time=event_time(event, ctx),
        hooks=ctx.services,
    )


async def _group_created(session: AsyncSession, event: GroupCreated, ctx: HandlerContext) -> None:
    await groups.on_group_created(
        session,
        corp_of(event, ctx),
        chat_id=event.chat_id,
        event_time=event_time(event, ctx),
        refetch_delay=ctx.settings.group_refetch_delay,
    )


async def _group_updated(session: AsyncSession, event: GroupUpdated, ctx: HandlerContext) -> None:
    await groups.on_group_updated(
        session,
        corp_of(event, ctx),
        chat_id=event.chat_id,
        update_detail=event.update_detail,
        event_time=event_time(event, ctx),
        refetch_delay=ctx.settings.group_refetch_delay,
        members=event.mem_change_list,
        join_scene=event.join_scene,
        quit_scene=event.quit_scene,
        last_mem_ver=event.last_mem_ver,
        cur_mem_ver=event.cur_mem_ver,
        hooks=ctx.services,
    )


async def _group_dismissed(session: AsyncSession, event: GroupDismissed, ctx: HandlerContext) -> None:
    await groups.on_group_dismissed(
        session, corp_of(event, ctx), chat_id=event.chat_id, event_time=event_time(event, ctx)
    )


async def _tag_changed(session: AsyncSession, event: TagEvent, ctx: HandlerContext) -> None:
    await tags.on_tag_changed(
        session,
        corp_of(event, ctx),
        change_type=event.change_type,
        tag_type=event.tag_type,
        tag_id=event.tag_id,
        strategy_id=event.strategy_id,
        event_time=event_time(event, ctx),
    )


_SERVICES: dict[type[WeComEvent], Apply] = {
    ContactAdded: _contact_added,
    ContactHalfAdded: _contact_added,
    ContactEdited: _contact_edited,
    ContactDeletedByStaff: _deleted_by_staff,
    StaffDeletedByContact: _staff_deleted,
    TransferFailed: _transfer_failed,
    GroupCreated: _group_created,
    GroupUpdated: _group_updated,
    GroupDismissed: _group_dismissed,
    TagCreated: _tag_changed,
    TagUpdated: _tag_changed,
    TagDeleted: _tag_changed,
    TagShuffled: _tag_changed,
}
_LOG_ONLY: tuple[type[WeComEvent], ...] = (UnknownEvent,)


async def _app_message(event: WeComEvent, ctx: HandlerContext) -> None:
    """A staff member's message to the self-built app: stored as source ``app``, sender staff."""
    if not isinstance(event, AppMessage):
        raise TypeError(f"app message handler got {type(event).__name__}")
    incoming = IncomingMessage(
        source="app",
        msgid=event.msg_id or event.dedup_key.removeprefix("msg:"),
        sent_at=event_time(event, ctx),
        userid=event.from_user,
        sender_type="staff",
        msgtype=event.msg_type or "text",
        text=event.content,
        payload=event.to_payload(),
    )
    async with write_transaction(ctx.session_factory) as session:
        await store_message(
            session, corp_of(event, ctx), incoming, intent=ctx.services.intent, hooks=ctx.services, now=ctx.now()
        )
    ctx.notify_outbox()


async def _kf_sync(event: WeComEvent, ctx: HandlerContext) -> None:
    """微信客服 messages are waiting: page kf/sync_msg from the stored cursor (serialized per open_kfid)."""
    if not isinstance(event, KfMsgOrEvent):
        raise TypeError(f"kf handler got {type(event).__name__}")
    if ctx.client is None:
        raise LianyiError("kf_msg_or_event needs the WeCom client in the handler context")
    sync = KfSync(ctx.client, ctx.session_factory, corp_of(event, ctx), services=ctx.services, now=ctx.now)
    await sync.run(event.open_kfid, event.token)
    ctx.notify_outbox()


_INGESTERS: dict[type[WeComEvent], Handler] = {AppMessage: _app_message, KfMsgOrEvent: _kf_sync}


def _service_handler(cls: type[WeComEvent], apply: Apply) -> Handler:
    async def handle(event: WeComEvent, ctx: HandlerContext) -> None:
        if not isinstance(event, cls):
            raise TypeError(f"{cls.event_type} handler got {type(event).__name__}")
        async with write_transaction(ctx.session_factory) as session:
            await apply(session, event, ctx)
        ctx.notify_outbox()

    handle.__name__ = f"handle_{cls.__name__}"
    return handle


async def _log_event(event: WeComEvent, ctx: HandlerContext) -> None:
    log.info(
        "event received, no sync action",
        extra={"event_type": event.event_type, "dedup_key": event.dedup_key, "corp_id": corp_of(event, ctx)},
    )


def register_sync_handlers(router: Router) -> None:
    """Register a handler for every event type :mod:`bot.edge.events` produces."""
    for cls, apply in _SERVICES.items():
        router.register(cls.event_type, _service_handler(cls, apply))
    for cls, handler in _INGESTERS.items():
        router.register(cls.event_type, handler)
    for cls in _LOG_ONLY:
        router.register(cls.event_type, _log_event)
