"""The world of the campaign crash tests: the emulator in the test process (real socket, wall clock), the same
staff and groups in it and in PostgreSQL, and `lianyi serve` subprocesses (scheduler, dispatcher) that a test
SIGKILLs at a chosen moment.

Moments at the WeCom seam are chosen with :class:`KillOnCall`: an aiohttp middleware on the emulator app (the
emulator's own code is untouched) runs after the API handler produced its answer and before that answer is
written, so "WeCom did it, the caller never heard" is exact: the handler's effect (a task created, a result
read) exists, and the caller is dead before a byte of the answer leaves the emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from sqlmodel import col, select

from bot.emulator.api import create_emulator_app
from bot.emulator.server import RunningEmulator
from bot.emulator.state import EmulatorState
from scrm.campaigns.spec import CampaignSpec
from scrm.db import SessionFactory, make_engine, make_session_factory, transaction
from scrm.db_types import utcnow
from scrm.models import (
    Campaign,
    CampaignBatch,
    CampaignRun,
    CampaignTarget,
    OutboxCommand,
)
from scrm.models.accounts import UserRole
from tests.campaigns.support import AGENT_ID, SECRET, make_state, seed_owner_groups, spec
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.users_support import Account, add_accounts

LIANYI = Path(sys.executable).with_name("lianyi")
# the campaign ticks read policy.yaml from LIANYI_SOP_DIR: no quiet hours (CI runs at night too), no caps
OPEN_POLICY = 'quiet_hours: {start: "00:00", end: "00:00"}\ncaps: {per_day: 0, per_week: 0}\n'
T = TypeVar("T")


def group_campaign(code: str) -> CampaignSpec:
    """A group push to every active group, one text per dealer (so one content per owner), sent now."""
    return spec(
        f"""\
        code: {code}
        name: 断电演练
        chat_type: group
        content:
          text: "{{{{ dealer.name }}}}周末试驾日，欢迎到店！"
        schedule: {{now: true}}
        """
    )


@dataclass
class KillOnCall:
    """SIGKILL ``victim()`` when the emulator is about to answer the ``nth`` successful call of ``api`` whose
    request body passes ``match``; the answer is only released once the victim is dead."""

    api: str
    nth: int
    victim: Callable[[], asyncio.subprocess.Process]
    match: Callable[[dict[str, Any]], bool] = lambda _body: True
    seen: int = 0
    fired: asyncio.Event = field(default_factory=asyncio.Event)
    request: dict[str, Any] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.fired.is_set() or not isinstance(response, web.Response) or response.text is None:
            return
        answer = json.loads(response.text)
        body = json.loads(await request.read() or b"{}")
        if answer.get("errcode") != 0 or not self.match(body):
            return
        self.seen += 1
        if self.seen < self.nth:
            return
        victim = self.victim()
        victim.send_signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        self.request, self.answer = body, answer
        self.fired.set()


@dataclass
class CrashWorld:
    state: EmulatorState
    emulator: RunningEmulator
    sessions: SessionFactory
    database_url: str
    redis_url: str
    redis_prefix: str
    sop_dir: Path
    logs: Path
    hooks: dict[str, KillOnCall] = field(default_factory=dict)  # API path → its kill hook
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    log_files: list[Path] = field(default_factory=list)

    # ---- processes ---------------------------------------------------------------------------------------

    def env(self, instance: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
        values = {
            "CORP_ID": TEST_CORP_ID,
            "CALLBACK_TOKEN": TEST_TOKEN,
            "CALLBACK_AES_KEY": TEST_AES_KEY,
            "SECRET_KEY": TEST_SECRET_KEY,
            "APP_SECRET": SECRET,
            "AGENT_ID": str(AGENT_ID),
            "WECOM_API_BASE": self.emulator.base_url,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "REDIS_PREFIX": self.redis_prefix,
            "REDIS_ACCEPT_VOLATILE": "true",  # the machine's Redis keeps nothing on disk (SERVICES.md)
            "INSTANCE_ID": instance,
            "LOG_JSON": "false",
            "LOG_LEVEL": "WARNING",
            "SOP_DIR": str(self.sop_dir),
            "SOP_TICK_SECONDS": "0.5",  # campaign_due cadence
            "CAMPAIGN_POLL_SECONDS": "1",  # a young task is polled every second (the tick runs every 5 s)
            "OUTBOX_LEASE_SECONDS": "10",  # a dead dispatcher's command is claimed again after 10 s
            "LEADER_TTL_SECONDS": "3",  # a dead leader is replaced within 3 s
            **extra,
        }
        env.update({f"LIANYI_{k}": v for k, v in values.items()})
        return env

    async def start(self, roles: str, instance: str, **extra: str) -> asyncio.subprocess.Process:
        """`lianyi serve --roles ROLES` as ``instance``; its stderr goes to ``logs/INSTANCE.log``."""
        log = self.logs / f"{instance}.log"
        with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
            proc = await asyncio.create_subprocess_exec(
                str(LIANYI),
                "serve",
                "--roles",
                roles,
                "--port",
                "0",
                env=self.env(instance, **extra),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        self.processes.append(proc)
        self.log_files.append(log)
        return proc

    @staticmethod
    async def kill(proc: asyncio.subprocess.Process) -> None:
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL

    @staticmethod
    async def stop(proc: asyncio.subprocess.Process) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def tracebacks(self) -> list[str]:
        """Log files of processes that logged a traceback (a killed process simply stops writing)."""
        logs = {path.name: path.read_text(errors="replace") for path in self.log_files}
        return [f"{name}:\n{text[-3000:]}" for name, text in logs.items() if "Traceback" in text]

    # ---- the world ---------------------------------------------------------------------------------------

    async def seed_groups(self, groups_per_owner: list[int]) -> dict[str, list[str]]:
        """Owner ``n`` owns ``groups_per_owner[n]`` active groups, in the emulator and the database (one dealer
        per owner, so each owner's groups get one text); returns owner → chat ids."""
        return await seed_owner_groups(
            self.state, self.sessions, groups_per_owner, now=utcnow(), dealers=len(groups_per_owner)
        )

    async def save(self, campaign: CampaignSpec) -> Campaign:
        from scrm.campaigns.service import save_campaign

        await add_accounts(self.sessions, (Account("operator1", UserRole.OPERATOR),))  # who saves it
        async with transaction(self.sessions) as session:
            saved = await save_campaign(session, TEST_CORP_ID, campaign, by="operator1", now=utcnow())
        return saved.campaign

    # ---- what the database says --------------------------------------------------------------------------

    async def runs(self) -> list[CampaignRun]:
        async with self.sessions() as session:
            return list((await session.exec(select(CampaignRun).order_by(col(CampaignRun.id)))).all())

    async def batches(self) -> list[CampaignBatch]:
        async with self.sessions() as session:
            return list((await session.exec(select(CampaignBatch).order_by(col(CampaignBatch.batch_no)))).all())

    async def targets(self) -> list[CampaignTarget]:
        async with self.sessions() as session:
            return list((await session.exec(select(CampaignTarget).order_by(col(CampaignTarget.target_id)))).all())

    async def commands(self) -> list[OutboxCommand]:
        async with self.sessions() as session:
            query = select(OutboxCommand).where(col(OutboxCommand.idempotency_key).startswith("campaign:"))
            return list((await session.exec(query.order_by(col(OutboxCommand.id)))).all())

    async def run_status(self) -> str:
        runs = await self.runs()
        return runs[0].status if len(runs) == 1 else f"{len(runs)} runs"

    # ---- the invariants ----------------------------------------------------------------------------------

    async def assert_exactly_once(self, chats: dict[str, list[str]]) -> list[CampaignBatch]:
        """No lost target and no duplicate task: one run; a target row per group, each in exactly one batch;
        one command and one msgid per batch; at the emulator exactly one task per batch, reaching exactly that
        batch's groups, and every group covered by exactly one task."""
        audience = sorted(c for ids in chats.values() for c in ids)
        runs = await self.runs()
        assert len(runs) == 1, [(r.slot, r.status) for r in runs]
        targets = await self.targets()
        assert [t.target_id for t in targets] == audience  # every group planned, once (the list is sorted)
        assert all(t.batch_no is not None for t in targets)
        batches = await self.batches()
        commands = await self.commands()
        assert sorted(c.idempotency_key for c in commands) == sorted(b.key for b in batches)
        assert all(c.status == "done" for c in commands), [(c.idempotency_key, c.status) for c in commands]
        members = Counter(t.batch_no for t in targets)
        assert {b.batch_no: b.target_count for b in batches} == dict(members)
        assert sum(b.target_count for b in batches) == len(audience)
        msgids = [b.msgid for b in batches]
        assert all(msgids) and len(set(msgids)) == len(batches)  # one task per batch, no two batches share one
        tasks = self.state.group_msgs_by_creator()
        created = {creator: len(ids) for creator, ids in tasks.items()}
        assert sum(created.values()) == len(batches), created  # no task beyond one per batch
        by_batch: dict[int | None, set[str]] = {t.batch_no: set() for t in targets}
        for t in targets:
            by_batch[t.batch_no].add(t.target_id)
        for b in batches:
            msg = self.state.group_msgs[b.msgid]
            assert msg.creator == b.sender and {r.recipient for r in msg.recipients} == by_batch[b.batch_no]
        coverage = self.state.group_send_coverage("group")
        assert sorted(coverage) == audience and all(len(ids) == 1 for ids in coverage.values())
        return batches


async def wait_for(check: Callable[[], Awaitable[T]], *, within: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {within:.0f} s (last: {value!r})")
        await asyncio.sleep(every)


async def _start_emulator(state: EmulatorState, hooks: dict[str, KillOnCall]) -> RunningEmulator:
    """:func:`bot.emulator.server.start_emulator` plus the kill-hook middleware (added before the app freezes)."""

    @web.middleware
    async def kill_hooks(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        hook = hooks.get(request.path.removeprefix("/cgi-bin/"))
        if hook is not None:
            await hook(request, response)
        return response

    app = create_emulator_app(state)
    app.middlewares.append(kill_hooks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(int(addr[1]) for addr in runner.addresses if isinstance(addr, tuple))
    return RunningEmulator(state=state, runner=runner, host="127.0.0.1", port=port)


@asynccontextmanager
async def crash_world(pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> AsyncIterator[CrashWorld]:
    """The world on the wall clock; every process it started is gone when the block ends."""
    sop_dir = tmp_path / "sop"
    sop_dir.mkdir()
    (sop_dir / "policy.yaml").write_text(OPEN_POLICY, encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    state = make_state(None)  # type: ignore[arg-type]  # None: the emulator's wall clock
    hooks: dict[str, KillOnCall] = {}
    emulator = await _start_emulator(state, hooks)
    engine = make_engine(pg_url)
    world = CrashWorld(
        state, emulator, make_session_factory(engine), pg_url, redis_url, redis_prefix, sop_dir, logs, hooks
    )
    try:
        yield world
    finally:
        await asyncio.gather(*(world.stop(proc) for proc in world.processes if proc.returncode is None))
        await emulator.close()
        await engine.dispose()
