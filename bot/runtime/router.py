"""Route typed callback events to their handlers.

This is the only dispatch between an event and its handlers: the edge chose the event's class, the worker
rebuilt it, and the router runs the handlers registered for its ``event_type``. The application's handlers and
the registry that binds them to event classes live together in :mod:`bot.runtime.handlers`.

A handler is ``async def handler(event: WeComEvent, ctx: HandlerContext) -> None``. Register it with
``@router.on("contact.added")``, ``router.register("contact.added", handler)`` or with the event class instead
of its type string; event types are the ``event_type`` strings of :mod:`bot.edge.events`, checked at
registration so a typo fails at start-up, not in production. Several handlers of one type run in registration
order; if one raises, the worker retries the whole event, so every handler must be idempotent (they are: their
side effects go through the outbox's idempotency keys and upserts). The fallback: an event type without a
handler (an unknown one included) is logged once and acked, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from bot.edge.events import WeComEvent, known_event_types
from bot.settings import Settings
from scrm.db import SessionFactory
from scrm.services import Services

if TYPE_CHECKING:
    from bot.wecom.client import WeComClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What every handler gets besides the event."""

    session_factory: SessionFactory
    settings: Settings
    now: Callable[[], datetime]
    # Call after committing outbox commands, so the dispatcher runs them at once instead of at its next poll.
    notify_outbox: Callable[[], None]
    # the domain's services (SOP engine, leads, intent, lifecycle hooks), built once per process
    services: Services
    # The WeCom API, for handlers that must fetch what a callback only announces (微信客服 sync_msg).
    client: WeComClient | None = None


Handler = Callable[[WeComEvent, HandlerContext], Awaitable[None]]
H = TypeVar("H", bound=Handler)


class Router:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._known = frozenset(known_event_types())
        self._reported_unhandled: set[str] = set()

    def register(self, event: str | type[WeComEvent], handler: Handler) -> None:
        event_type = event if isinstance(event, str) else event.event_type
        if event_type not in self._known:
            raise ValueError(f"unknown event type {event_type!r}; known: {', '.join(sorted(self._known))}")
        self._handlers.setdefault(event_type, []).append(handler)

    def on(self, event: str | type[WeComEvent]) -> Callable[[H], H]:
        """Decorator form of :meth:`register`; returns the handler unchanged."""

        def decorate(handler: H) -> H:
            self.register(event, handler)
            return handler

        return decorate

    def handlers_for(self, event_type: str) -> tuple[Handler, ...]:
        return tuple(self._handlers.get(event_type, ()))

    @property
    def event_types(self) -> list[str]:
        """Event types that have at least one handler."""
        return sorted(self._handlers)

    async def dispatch(self, event: WeComEvent, ctx: HandlerContext) -> bool:
        """Run the handlers of ``event`` in order. False when it has none (logged once per type)."""
        handlers = self._handlers.get(event.event_type)
        if not handlers:
            if event.event_type not in self._reported_unhandled:
                self._reported_unhandled.add(event.event_type)
                log.warning(
                    "no handler for event type %s; such events are acked without processing",
                    event.event_type,
                    extra={"event_type": event.event_type, "dedup_key": event.dedup_key},
                )
            return False
        for handler in handlers:
            await handler(event, ctx)
        return True
