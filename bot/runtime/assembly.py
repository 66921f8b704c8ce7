"""Lifecycle of one Lianyi process, in one place (STYLE.md lesson 8).

`Runtime` owns the engine, the Redis pool, the HTTP session, the inbox, the WeCom client, and the
background loops its roles need: ``worker`` (inbox → router → services), ``dispatcher`` (outbox → WeCom),
``scheduler`` (leader-only ticks). The ``edge`` role only needs the inbox. Every background task is kept in
``self._tasks`` and cancelled on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.inbox.base import Inbox
from bot.inbox.durability import GuardedInbox, InboxNotDurable, PersistenceGuard, read_persistence
from bot.inbox.factory import inbox_uses_redis, make_inbox
from bot.outbox.dispatcher import OutboxDispatcher
from bot.outbox.wakeup import OutboxWakeup
from bot.redis_keys import RedisKeys
from bot.runtime.campaign_wiring import campaign_ticks
from bot.runtime.handlers import register_sync_handlers
from bot.runtime.lead_transfers import transfer_ticks
from bot.runtime.lead_wiring import lead_ticks
from bot.runtime.leader import LeaderLock, RedisLeader, SingleProcessLeader
from bot.runtime.privacy_wiring import retention_ticks
from bot.runtime.reconcile import reconcile_ticks
from bot.runtime.router import HandlerContext, Router
from bot.runtime.scheduler import LeaderScheduler, maintenance_ticks
from bot.runtime.services import build_services
from bot.runtime.sop_wiring import load_templates, reload_templates, sop_ticks
from bot.runtime.worker import Worker
from bot.settings import Settings
from bot.web.health import count_unknown_outcomes, template_status, watch_templates
from bot.wecom.client import WeComClient, build_wecom_client
from scrm.db import SessionFactory, checkpoint, make_engine, make_session_factory
from scrm.db_types import utcnow
from scrm.services import Services

log = logging.getLogger(__name__)


class Role(StrEnum):
    EDGE = "edge"
    WORKER = "worker"
    DISPATCHER = "dispatcher"
    SCHEDULER = "scheduler"


ALL_ROLES = frozenset(Role)
CHECKPOINT_SECONDS = 1.0  # SQLite: how often the WAL is copied back into the database file


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    """One process, built whole at construction (database engine, Redis client, inbox, router, the domain's
    services) so the routes added on top of it reach real objects. :meth:`start` opens the HTTP session the WeCom
    client needs (it must be created inside the event loop) and starts the loops of the process's roles."""

    settings: Settings
    roles: frozenset[Role] = ALL_ROLES
    now: Callable[[], datetime] = utcnow
    services: Services = field(init=False)
    instance_id: str = field(init=False)
    keys: RedisKeys = field(init=False)
    engine: AsyncEngine = field(init=False)
    session_factory: SessionFactory = field(init=False)
    redis: aioredis.Redis | None = field(init=False, default=None)
    inbox: Inbox = field(init=False)
    durability: PersistenceGuard | None = field(init=False, default=None)
    router: Router = field(init=False)
    wakeup: OutboxWakeup = field(init=False)
    http: aiohttp.ClientSession = field(init=False)
    client: WeComClient = field(init=False)
    dispatcher: OutboxDispatcher | None = field(init=False, default=None)
    worker: Worker | None = field(init=False, default=None)
    scheduler: LeaderScheduler | None = field(init=False, default=None)
    _stop: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        s = self.settings
        self.services = build_services(s)
        self.instance_id = s.instance_id or default_instance_id()
        self.keys = RedisKeys(s.redis_prefix)
        # No pre-ping: it costs a round trip per checkout on the hot path (~10 % of a worker's CPU). A connection
        # that died with the server fails its unit of work once; inbox events and outbox commands are retried.
        self.engine = make_engine(s.database_url, pool_pre_ping=False, background_checkpoints=True)
        self.session_factory = make_session_factory(self.engine)
        if s.redis_url:
            self.redis = aioredis.from_url(s.redis_url)
        self.inbox = make_inbox(s, session_factory=self.session_factory, redis=self.redis)
        if self.redis is not None and inbox_uses_redis(s) and Role.EDGE in self.roles and not s.redis_accept_volatile:
            self.durability = PersistenceGuard(self.redis, interval=s.redis_durability_check_seconds)
            self.inbox = GuardedInbox(self.inbox, self.durability)
        self.wakeup = OutboxWakeup(self.redis, self.keys)
        self.router = Router()
        register_sync_handlers(self.router)
        if self.services.sop is not None:
            watch_templates(self.services.sop.holder)

    async def start(self) -> None:
        """Check the inbox keeps what the edge acknowledges, open the WeCom client, start the roles' loops.

        Raises :class:`InboxNotDurable` (after releasing the engine and Redis) when the edge would acknowledge
        callbacks into a Redis that does not persist them."""
        s = self.settings
        await self._check_inbox_durability()
        if self.services.sop is not None:  # off the event loop: loading checks (renders) every template
            await load_templates(self.services.sop.holder)
            self._spawn("sop-templates", reload_templates(self.services.sop.holder, self._stop))
        self.http = aiohttp.ClientSession()
        self.client = build_wecom_client(s, self.http, self.redis)
        if Role.DISPATCHER in self.roles:
            self._start_dispatcher()
        if Role.WORKER in self.roles:
            ctx = HandlerContext(
                session_factory=self.session_factory,
                settings=s,
                services=self.services,
                now=self.now,
                notify_outbox=self.wakeup.notify,
                client=self.client,
            )
            self.worker = Worker(
                self.inbox, self.router, ctx, consumer=self.instance_id, max_attempts=s.worker_max_attempts
            )
            self._spawn("worker", self.worker.run(self._stop))
        if Role.SCHEDULER in self.roles:
            await self._start_scheduler()
        if self.durability is not None:
            self._spawn("inbox-durability", self.durability.watch(self._stop))
        if self.engine.dialect.name == "sqlite":
            self._spawn("sqlite-checkpoint", self._checkpoint_sqlite())
        log.info("runtime started", extra={"roles": sorted(self.roles), "instance": self.instance_id})

    async def _check_inbox_durability(self) -> None:
        """Refuse a Redis inbox that keeps nothing (a Redis that cannot be reached is not refused: the edge answers
        503 until its persistence has been read). With ``LIANYI_REDIS_ACCEPT_VOLATILE`` only warn."""
        if self.durability is not None:
            await self.durability.check()
            if self.durability.problem is not None and self.durability.definite:
                refusal = InboxNotDurable(self.durability.problem)
                log.error("%s", refusal)
                await self._release_storage()
                raise refusal
        elif self.redis is not None and inbox_uses_redis(self.settings) and Role.EDGE in self.roles:
            with contextlib.suppress(RedisError):
                problem = (await read_persistence(self.redis)).problem()
                if problem is not None:
                    log.warning(
                        "the Redis inbox does not persist [%s]; LIANYI_REDIS_ACCEPT_VOLATILE accepts losing the "
                        "callbacks acknowledged into it when Redis restarts",
                        problem,
                    )

    def _start_dispatcher(self) -> None:
        self.dispatcher = OutboxDispatcher(
            self.session_factory,
            self.client,
            self.settings,
            instance_id=self.instance_id,
            lease_seconds=self.settings.outbox_lease_seconds,
            clock=self.now,
            hooks=self.services,
        )
        self.wakeup.subscribe_local(self.dispatcher)
        self._spawn("dispatcher", self.dispatcher.run(self._stop))
        self._spawn("outbox-wakeup", self.wakeup.listen(self._stop))

    async def _start_scheduler(self) -> None:
        s, factory, services = self.settings, self.session_factory, self.services
        leader: LeaderLock = (
            RedisLeader(self.redis, self.keys.leader_lock(), ttl_seconds=s.leader_ttl_seconds)
            if self.redis is not None
            else SingleProcessLeader()
        )
        self.scheduler = LeaderScheduler(
            leader=leader, now=self.now, notify_outbox=self.wakeup.notify, renew_seconds=s.leader_ttl_seconds / 3
        )
        ticks = [*maintenance_ticks(factory, s.corp_id)]
        if services.sop is not None:
            ticks += sop_ticks(factory, services.sop, s.corp_id, every=s.sop_tick_seconds)
        if services.leads is not None:
            ticks += lead_ticks(factory, services.leads, s.corp_id, every=s.sop_tick_seconds)
        ticks += transfer_ticks(factory, self.client, s.corp_id)
        ticks += campaign_ticks(factory, self.client, s, every=s.sop_tick_seconds)
        ticks += retention_ticks(factory, s)
        ticks += reconcile_ticks(
            self.client, factory, s.corp_id, hooks=services, minutes=s.reconcile_minutes, now=self.now, stop=self._stop
        )
        for tick in ticks:
            self.scheduler.add_tick(tick)
        await self.scheduler.start()

    async def _checkpoint_sqlite(self) -> None:
        """The engine leaves WAL checkpoints to this loop (off the write path, in aiosqlite's thread; see
        :func:`scrm.db.make_engine`): once a second, and once more at the end."""
        while not self._stop.is_set():
            try:
                await checkpoint(self.engine)
            except SQLAlchemyError as exc:  # a busy or vanished file: the next round tries again
                log.warning("SQLite checkpoint failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CHECKPOINT_SECONDS)
        await checkpoint(self.engine)

    def _spawn(self, name: str, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._stop.is_set():
            log.error("background task died", extra={"task": task.get_name()}, exc_info=task.exception())

    async def health(self) -> dict[str, str]:
        """What /healthz reports: each dependency 'ok' or the error."""
        status: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            status["database"] = "ok"
        except Exception as exc:
            status["database"] = f"error: {exc.__class__.__name__}"
        if self.redis is not None:
            try:
                await self.redis.ping()
                status["redis"] = "ok"
            except Exception as exc:
                status["redis"] = f"error: {exc.__class__.__name__}"
        if self.durability is not None:  # the edge refuses callbacks (503) while its Redis inbox does not persist
            problem = self.durability.problem
            status["inbox_persistence"] = "ok" if problem is None else f"error: {problem}"
        if self.scheduler is not None:
            status["leader"] = "yes" if self.scheduler.is_leader else "no"
        try:  # informational: commands whose call may have reached WeCom unanswered (lianyi deadletter unknown)
            status["outbox_unknown"] = str(await count_unknown_outcomes(self.session_factory))
        except Exception as exc:
            status["outbox_unknown"] = f"error: {exc.__class__.__name__}"
        if self.services.sop is not None:  # informational: never makes /healthz fail
            status.update(template_status(self.services.sop.holder))
        return status

    async def close(self) -> None:
        self._stop.set()
        if self.scheduler is not None:
            await self.scheduler.stop()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.wakeup.close()
        await self.http.close()
        await self._release_storage()
        log.info("runtime stopped", extra={"instance": self.instance_id})

    async def _release_storage(self) -> None:
        await self.inbox.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def parse_roles(value: str | Iterable[str]) -> frozenset[Role]:
    items = value.split(",") if isinstance(value, str) else list(value)
    roles = set()
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item == "all":
            return ALL_ROLES
        try:
            roles.add(Role(item))
        except ValueError:
            raise ValueError(f"unknown role {item!r}; choose from {', '.join(r.value for r in Role)} or all") from None
    return frozenset(roles)
