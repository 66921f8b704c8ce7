"""One dispatch from event to handler: the edge chooses the event class, the worker rebuilds that class from what
the inbox stored (without classifying the callback again), and one registry binds every class to its handler."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from bot.edge import events as ev
from bot.inbox.base import Inbox
from bot.runtime.handlers import SYNC_HANDLERS, register_sync_handlers
from bot.runtime.router import HandlerContext, Router
from bot.runtime.worker import Worker
from tests.worker.callbacks import contact_added, inbox_item


def test_every_event_class_has_exactly_one_binding() -> None:
    bound = [cls for binding in SYNC_HANDLERS for cls in binding.events]
    assert sorted(cls.__name__ for cls in bound) == sorted(cls.__name__ for cls in ev.EVENT_CLASSES)
    router = Router()
    register_sync_handlers(router)
    assert all(len(router.handlers_for(cls.event_type)) == 1 for cls in ev.EVENT_CLASSES)


def test_the_worker_rebuilds_the_class_the_edge_chose() -> None:
    item = inbox_item(contact_added("wmAAA", 1))
    rebuilt = ev.rebuild_event(item.event_type, item.payload)
    assert type(rebuilt) is ev.ContactAdded
    assert (rebuilt.dedup_key, rebuilt.ordering_key) == (item.dedup_key, item.ordering_key)
    # the stored type decides, not the fields: a type this build does not know is an UnknownEvent
    assert type(ev.rebuild_event("contact.renamed", item.payload)) is ev.UnknownEvent
    assert type(ev.rebuild_event(ev.UnknownEvent.event_type, item.payload)) is ev.UnknownEvent


def test_the_router_takes_event_classes_as_well_as_type_names() -> None:
    router = Router()

    async def handler(event: ev.WeComEvent, ctx: HandlerContext) -> None:
        return None

    router.register(ev.GroupCreated, handler)
    router.on(ev.TagCreated)(handler)
    assert router.event_types == ["group.created", "tag.created"]


async def test_a_stored_event_of_an_unknown_type_is_logged_and_acked(
    inbox: Inbox, ctx: HandlerContext, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router()
    register_sync_handlers(router)
    item = replace(inbox_item(contact_added("wmBBB", 2)), event_type="contact.renamed", dedup_key="future:1")
    await inbox.put(item)
    worker = Worker(inbox, router, ctx, consumer="test-worker", max_attempts=1)
    with caplog.at_level(logging.INFO, logger="bot.runtime.handlers"):
        assert await worker.run_once() == 1
    assert [r.getMessage() for r in caplog.records if r.name == "bot.runtime.handlers"] == [
        "event received, no sync action"
    ]
    assert await inbox.claim("check", block_ms=0) == []  # acked, not retried or dead-lettered
