"""Lianyi and the WeCom emulator together on localhost: what `lianyi demo`, end-to-end tests and benchmarks run.

`LocalStack` starts the emulator, points a Lianyi runtime at it (the app with every role, or only the roles
asked for), runs a full sync so staff and tags exist, and offers a callback driver that speaks to Lianyi the way
WeCom does. `wait_until_settled` waits (on the database, not on a timer) until the inbox is drained and every
outbox command reached a final state.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func
from sqlmodel import col, select

from bot.emulator.callbacks import CallbackDriver
from bot.emulator.clock import VirtualClock
from bot.emulator.scenario import Scenario, build_state
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import ALL_ROLES, Role, Runtime
from bot.runtime.fullsync import FullSync, SyncReport
from bot.settings import Settings, load_settings
from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.models import CommandStatus, OutboxCommand
from scrm.sync.staff import upsert_dealer

FINAL_COMMAND_STATES = [s.value for s in CommandStatus if s.is_final]


def random_aes_key() -> str:
    """A fresh EncodingAESKey: 43 base64 characters of 32 random bytes."""
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")


@dataclass
class LocalStack:
    scenario: Scenario
    database_url: str
    redis_url: str = ""
    redis_prefix: str = "lianyi"
    host: str = "127.0.0.1"
    port: int = 0
    roles: frozenset[Role] = ALL_ROLES
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    # one clock for the emulator and the runtime (e.g. a VirtualClock a test moves by days); None = wall clock
    clock: VirtualClock | None = None
    # The stack talks to an emulator, never to WeCom: no real callback is lost if its (test or demo) Redis keeps
    # nothing on disk, so by default the edge accepts such a Redis (LIANYI_REDIS_ACCEPT_VOLATILE).
    accept_volatile_redis: bool = True
    state: EmulatorState = field(init=False)
    emulator: RunningEmulator = field(init=False)
    settings: Settings = field(init=False)
    http: aiohttp.ClientSession = field(init=False)
    runner: web.AppRunner = field(init=False)
    callback_url: str = field(init=False)

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self.state = build_state(self.scenario, clock=self.clock)
        self.emulator = await start_emulator(self.state)
        app_spec = self.scenario.apps[0]
        values: dict[str, Any] = {
            "corp_id": self.state.corp_id,
            "callback_token": secrets.token_urlsafe(16)[:32],
            "callback_aes_key": random_aes_key(),
            "callback_max_age": 300,
            "app_secret": app_spec.secret,
            "agent_id": app_spec.agent_id,
            "wecom_api_base": self.emulator.base_url,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_prefix": self.redis_prefix,
            "host": self.host,
            "port": self.port or 8080,
            "group_refetch_delay": 0.2,
            "redis_accept_volatile": self.accept_volatile_redis,
            "secret_key": secrets.token_urlsafe(32),
        }
        values.update(self.settings_overrides)
        self.settings = load_settings(**values)
        self.http = aiohttp.ClientSession()
        runtime = Runtime(settings=self.settings, roles=self.roles, now=self.clock.utcnow if self.clock else utcnow)
        self.runner = web.AppRunner(create_app(self.settings, self.roles, runtime=runtime), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and hasattr(server, "sockets")
        bound_port = server.sockets[0].getsockname()[1]
        self.callback_url = f"http://{self.host}:{bound_port}/wecom/callback"

    @property
    def runtime(self) -> Runtime:
        return self.runner.app[RUNTIME_KEY]

    @property
    def session_factory(self) -> SessionFactory:
        return self.runtime.session_factory

    def driver(self, *, timeout: float = 5.0, retries: int = 3) -> CallbackDriver:
        s = self.settings
        return CallbackDriver(
            self.callback_url,
            s.callback_token,
            s.callback_aes_key,
            s.corp_id,
            http=self.http,
            timeout=timeout,
            retries=retries,
        )

    async def seed_dealers(self) -> None:
        """The brand's dealer list (names, cities) — what the roster import of a real deployment provides."""
        async with write_transaction(self.session_factory) as session:
            for dealer in self.scenario.dealers:
                await upsert_dealer(session, self.state.corp_id, dealer.code, name=dealer.name, city=dealer.city)

    async def full_sync(self) -> SyncReport:
        return await FullSync(self.runtime.client, self.session_factory, self.state.corp_id).run()

    async def counts(self) -> tuple[int, int]:
        """(inbox items not yet settled, outbox commands not yet final)."""
        async with self.session_factory() as session:
            outbox = (
                await session.exec(
                    select(func.count())
                    .select_from(OutboxCommand)
                    .where(col(OutboxCommand.status).not_in(FINAL_COMMAND_STATES))
                )
            ).one()
        return await self.runtime.inbox.backlog(), int(outbox)

    async def wait_until_settled(self, *, within: float = 60.0, quiet_polls: int = 3) -> None:
        """Return once the inbox is empty and every command is final for ``quiet_polls`` polls in a row."""
        deadline = asyncio.get_running_loop().time() + within
        quiet = 0
        while quiet < quiet_polls:
            inbox, outbox = await self.counts()
            quiet = quiet + 1 if inbox == 0 and outbox == 0 else 0
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"not settled after {within:.0f} s: {inbox} inbox events, {outbox} open commands")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.http.close()
        await self.emulator.close()
