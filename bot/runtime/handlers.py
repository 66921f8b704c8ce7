"""The handlers of every callback event, and the one registry that binds them to event classes.

:data:`SYNC_HANDLERS` (at the end of this module) lists, for every event class of :mod:`bot.edge.events`, what
handles it: a service adapter run :func:`in_transaction` (state changes + outbox commands committed together,
then the outbox is woken), a message ingester (app messages are stored; a kf callback runs a kf/sync_msg pass
for its open_kfid, see :mod:`bot.runtime.kf_sync`), or the Unknown fallback, which logs the event (it stays in
the inbox) and acks it. :func:`register_sync_handlers` loads the registry into a :class:`~bot.runtime.router.Router`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

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


async def _app_message(event: AppMessage, ctx: HandlerContext) -> None:
    """A staff member's message to the self-built app: stored as source ``app``, sender staff."""
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


async def _kf_sync(event: KfMsgOrEvent, ctx: HandlerContext) -> None:
    """微信客服 messages are waiting: page kf/sync_msg from the stored cursor (serialized per open_kfid)."""
    if ctx.client is None:
        raise LianyiError("kf_msg_or_event needs the WeCom client in the handler context")
    sync = KfSync(ctx.client, ctx.session_factory, corp_of(event, ctx), services=ctx.services, now=ctx.now)
    await sync.run(event.open_kfid, event.token)
    ctx.notify_outbox()


async def _log_event(event: WeComEvent, ctx: HandlerContext) -> None:
    log.info(
        "event received, no sync action",
        extra={"event_type": event.event_type, "dedup_key": event.dedup_key, "corp_id": corp_of(event, ctx)},
    )


# ---- the registry ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Binding:
    """``handler`` handles the events of the classes in ``events`` (the router finds it by their event_type)."""

    events: tuple[type[WeComEvent], ...]
    handler: Handler


def _checked(events: tuple[type[E], ...], handle: Callable[[E, HandlerContext], Awaitable[None]]) -> Handler:
    async def handler(event: WeComEvent, ctx: HandlerContext) -> None:
        if not isinstance(event, events):
            raise TypeError(f"{handle.__name__} got {type(event).__name__}")
        await handle(event, ctx)

    handler.__name__ = handle.__name__
    return handler


def directly(handle: Callable[[E, HandlerContext], Awaitable[None]], *events: type[E]) -> Binding:
    """A handler that runs as it is (it opens its own transactions, if any)."""
    return Binding(events, _checked(events, handle))


def in_transaction(apply: Callable[[AsyncSession, E, HandlerContext], Awaitable[None]], *events: type[E]) -> Binding:
    """A service adapter run in one write transaction per event (state + outbox commands), then the outbox is woken."""

    async def handle(event: E, ctx: HandlerContext) -> None:
        async with write_transaction(ctx.session_factory) as session:
            await apply(session, event, ctx)
        ctx.notify_outbox()

    handle.__name__ = f"handle_{apply.__name__.lstrip('_')}"
    return Binding(events, _checked(events, handle))


SYNC_HANDLERS: tuple[Binding, ...] = (
    in_transaction(_contact_added, ContactAdded),
    in_transaction(_contact_added, ContactHalfAdded),
    in_transaction(_contact_edited, ContactEdited),
    in_transaction(_deleted_by_staff, ContactDeletedByStaff),
    in_transaction(_staff_deleted, StaffDeletedByContact),
    in_transaction(_transfer_failed, TransferFailed),
    in_transaction(_group_created, GroupCreated),
    in_transaction(_group_updated, GroupUpdated),
    in_transaction(_group_dismissed, GroupDismissed),
    in_transaction(_tag_changed, TagCreated, TagUpdated, TagDeleted, TagShuffled),
    directly(_app_message, AppMessage),
    directly(_kf_sync, KfMsgOrEvent),
    directly(_log_event, UnknownEvent),  # the fallback: logged, kept in the inbox, acked
)


def register_sync_handlers(router: Router) -> None:
    """Register :data:`SYNC_HANDLERS` (a handler for every event type :mod:`bot.edge.events` produces)."""
    for binding in SYNC_HANDLERS:
        for event_class in binding.events:
            router.register(event_class, binding.handler)
