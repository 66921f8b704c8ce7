"""The aiohttp application: callback edge, /healthz, /metrics, with the runtime in its cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bot.edge.aibot import AiBotEndpoint
from bot.edge.callback import CallbackEdge
from bot.inbox.base import Delivery, InboxItem
from bot.runtime.assembly import ALL_ROLES, Role, Runtime
from bot.settings import Settings
from bot.web.health import add_health_routes
from bot.web.ingest_api import IngestApi
from bot.web.leads_api import LeadsApi
from bot.web.links import add_link_routes

RUNTIME_KEY = web.AppKey("runtime", Runtime)


def create_app(
    settings: Settings, roles: frozenset[Role] = ALL_ROLES, *, runtime: Runtime | None = None
) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    rt = runtime or Runtime(settings=settings, roles=roles)
    app[RUNTIME_KEY] = rt

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.close()

    app.cleanup_ctx.append(lifecycle)
    if Role.EDGE in rt.roles:
        CallbackEdge(settings, _RuntimeInbox(rt)).add_routes(app)
        if settings.aibot_token and settings.aibot_aes_key:
            AiBotEndpoint(settings, lambda: rt.session_factory, now=rt.now).add_routes(app)
        if settings.ingest_token:
            IngestApi(settings, lambda: rt.session_factory, now=rt.now).add_routes(app)
        LeadsApi(settings, lambda: rt.session_factory, now=rt.now).add_routes(app)
    if rt.sop_links is not None:
        add_link_routes(app, rt.sop_links, lambda: rt.session_factory, rt.now, sop_dir=settings.sop_dir)
    add_health_routes(app, rt.health)
    return app


class _RuntimeInbox:
    """The edge's view of the inbox: routes are added before the runtime starts, so resolve it per call."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def put(self, item: InboxItem) -> bool:
        return await self._runtime.inbox.put(item)

    async def claim(self, consumer: str, *, max_items: int = 64, block_ms: int = 1000) -> list[Delivery]:
        return await self._runtime.inbox.claim(consumer, max_items=max_items, block_ms=block_ms)

    async def ack(self, delivery: Delivery) -> None:
        await self._runtime.inbox.ack(delivery)

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> None:
        await self._runtime.inbox.retry(delivery, delay=delay, error=error)

    async def dead(self, delivery: Delivery, *, error: str) -> None:
        await self._runtime.inbox.dead(delivery, error=error)

    async def backlog(self) -> int:
        return await self._runtime.inbox.backlog()

    async def close(self) -> None:  # the runtime closes the real inbox
        return None
