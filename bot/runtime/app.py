"""The aiohttp application of one process: the callback edge and every web surface its roles serve, on top of a
:class:`~bot.runtime.assembly.Runtime` that is fully built before the first route is added. The runtime's
background loops start and stop with the application (its cleanup context)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import redis.asyncio as aioredis
from aiohttp import web

from bot.edge.aibot import AiBotEndpoint
from bot.edge.callback import CallbackEdge
from bot.redis_keys import RedisKeys
from bot.runtime.assembly import ALL_ROLES, Role, Runtime
from bot.settings import Settings
from bot.web.auth import WebAuth
from bot.web.console_home import ConsoleHome
from bot.web.console_login import ConsoleLogin
from bot.web.health import add_health_routes
from bot.web.ingest_api import IngestApi
from bot.web.leads_api import LeadsApi
from bot.web.links import add_link_routes
from bot.web.session_redis import RedisLoginThrottle, RedisSessionStore
from scrm.accounts.sessions import SessionStore, SqlSessionStore
from scrm.accounts.throttle import LoginThrottle, SqlLoginThrottle
from scrm.db import SessionFactory

RUNTIME_KEY = web.AppKey("runtime", Runtime)


def session_stores(
    settings: Settings, factory: SessionFactory, redis: aioredis.Redis | None
) -> tuple[SessionStore, LoginThrottle]:
    """Console sessions and sign-in failures: in Redis when LIANYI_REDIS_URL is set, else in the database."""
    if redis is not None:
        keys = RedisKeys(settings.redis_prefix)
        return RedisSessionStore(redis, keys), RedisLoginThrottle(redis, keys)
    return SqlSessionStore(factory), SqlLoginThrottle(factory)


def web_auth(rt: Runtime) -> tuple[WebAuth, LoginThrottle]:
    sessions, throttle = session_stores(rt.settings, rt.session_factory, rt.redis)
    return WebAuth(rt.settings, rt.session_factory, sessions, rt.now), throttle


def create_app(
    settings: Settings, roles: frozenset[Role] = ALL_ROLES, *, runtime: Runtime | None = None
) -> web.Application:
    rt = runtime or Runtime(settings=settings, roles=roles)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[RUNTIME_KEY] = rt

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.close()

    app.cleanup_ctx.append(lifecycle)
    factory, services = rt.session_factory, rt.services
    if Role.EDGE in rt.roles:
        CallbackEdge(settings, rt.inbox).add_routes(app)
        if settings.aibot_token and settings.aibot_aes_key:
            AiBotEndpoint(settings, factory, services, now=rt.now).add_routes(app)
        if settings.ingest_token:
            IngestApi(settings, factory, services, now=rt.now).add_routes(app)
        auth, throttle = web_auth(rt)
        LeadsApi(auth, leads=services.leads).add_routes(app)
        ConsoleLogin(auth, throttle, session_lifetime=timedelta(hours=settings.session_max_hours)).add_routes(app)
        ConsoleHome(auth).add_routes(app)
    if services.links is not None:
        add_link_routes(app, services.links, factory, rt.now, corp_id=settings.corp_id, services=services)
    add_health_routes(app, rt.health)
    return app
