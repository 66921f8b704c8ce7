"""A campaign world for tests: the same staff, dealers and groups in the emulator and in Lianyi's database,
the real outbox dispatcher and WeCom client, and the campaign ticks, all on one virtual clock."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import yaml
from sqlalchemy import insert
from sqlmodel import col, select

from bot.emulator.clock import VirtualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.runtime.campaign_wiring import track_once
from bot.wecom.client import WeComClient, build_wecom_client
from scrm.campaigns.service import run_due, save_campaign
from scrm.campaigns.spec import CampaignSpec
from scrm.contact_policy import Caps, Policy, QuietHours
from scrm.db import SessionFactory, transaction
from scrm.models import (
    Campaign,
    CampaignBatch,
    CampaignRun,
    CampaignTarget,
    CustomerGroup,
    Dealer,
    Staff,
)
from scrm.rows import ensure_corp
from tests.conftest import TEST_CORP_ID, make_settings
from tests.outbox.emulated_world import run_until_idle
from tests.users_support import add_accounts

SECRET = "test-secret"
AGENT_ID = 1000002
# Friday 2026-12-04 19:00 China time
FRIDAY_7PM = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
OPEN_POLICY = Policy(quiet_hours=QuietHours(start="00:00", end="00:00"), caps=Caps(per_day=0, per_week=0))  # type: ignore[arg-type]


def spec(text: str) -> CampaignSpec:
    return CampaignSpec.model_validate(yaml.safe_load(textwrap.dedent(text)))


def group_spec(
    code: str = "friday", *, extra: str = "", text: str = "{{ dealer.name }}周末试驾日，欢迎到店！"
) -> CampaignSpec:
    body = f"""\
        code: {code}
        name: 周末试驾活动
        chat_type: group
        content:
          text: "{text}"
        schedule: {{now: true}}
        """
    return spec(textwrap.dedent(body) + textwrap.dedent(extra))


def owner_id(n: int) -> str:
    return f"owner{n:04d}"


def chat_id(owner: int, n: int) -> str:
    return f"wr{owner:04d}x{n:04d}"


@dataclass
class CampaignWorld:
    state: EmulatorState
    emulator: RunningEmulator
    clock: VirtualClock
    sessions: SessionFactory
    client: WeComClient
    dispatcher: OutboxDispatcher
    policy: Policy = OPEN_POLICY
    calls_per_minute: int = 3000
    chats: dict[str, list[str]] = field(default_factory=dict)  # owner → chat ids

    async def seed_groups(self, owners: int, groups_per_owner: int, *, dealers: int = 1, members: int = 3) -> None:
        """``owners`` staff, each owning ``groups_per_owner`` active groups, in the emulator and the database."""
        sizes = [groups_per_owner] * owners
        seeded = await seed_owner_groups(
            self.state, self.sessions, sizes, now=self.clock.utcnow(), dealers=dealers, members=members
        )
        for owner, chats in seeded.items():
            self.chats.setdefault(owner, []).extend(chats)

    async def save(self, campaign: CampaignSpec, *, by: str = "operator1") -> Campaign:
        async with transaction(self.sessions) as session:
            saved = await save_campaign(session, TEST_CORP_ID, campaign, by=by, now=self.clock.utcnow())
        return saved.campaign

    async def plan(self) -> list[CampaignRun]:
        return await run_due(
            self.sessions, TEST_CORP_ID, self.clock.utcnow(), self.policy, calls_per_minute=self.calls_per_minute
        )

    async def dispatch_until_idle(self, *, max_rounds: int = 10_000) -> None:
        """Run the outbox until nothing is pending, jumping the clock to each next ``not_before``."""
        await run_until_idle(self.sessions, self.clock, self.dispatcher, max_rounds=max_rounds)

    async def track(self) -> int:
        return await track_once(self.client, self.sessions, self.clock.utcnow(), self.policy)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def targets(self) -> list[CampaignTarget]:
        async with self.sessions() as session:
            return list((await session.exec(select(CampaignTarget).order_by(col(CampaignTarget.target_id)))).all())

    async def batches(self) -> list[CampaignBatch]:
        async with self.sessions() as session:
            return list((await session.exec(select(CampaignBatch).order_by(col(CampaignBatch.batch_no)))).all())

    async def runs(self) -> list[CampaignRun]:
        async with self.sessions() as session:
            return list((await session.exec(select(CampaignRun).order_by(col(CampaignRun.id)))).all())


async def seed_owner_groups(
    state: EmulatorState,
    sessions: SessionFactory,
    sizes: Sequence[int],
    *,
    now: datetime,
    dealers: int = 1,
    members: int = 0,
) -> dict[str, list[str]]:
    """Owner ``n`` (dealer ``n % dealers``) owns ``sizes[n]`` active groups of ``members`` customers each, in the
    emulator and in the database (groups written in bulk); returns owner → chat ids."""
    chats: dict[str, list[str]] = {}
    async with transaction(sessions) as session:
        await ensure_corp(session, TEST_CORP_ID)
        for d in range(dealers):
            code = f"D{d:03d}"
            state.add_dealer(code, f"经销商{d:03d}", "北京")
            session.add(Dealer(corp_id=TEST_CORP_ID, code=code, name=f"经销商{d:03d}", city="北京"))
        await session.flush()
        dealer_ids = {
            d.code: d.id for d in (await session.exec(select(Dealer).where(Dealer.corp_id == TEST_CORP_ID))).all()
        }
        groups: list[dict[str, Any]] = []
        for o, count in enumerate(sizes):
            userid, code = owner_id(o), f"D{o % dealers:03d}"
            state.add_staff(userid, f"群主{o:04d}", code)
            session.add(Staff(corp_id=TEST_CORP_ID, userid=userid, name=f"群主{o:04d}", dealer_id=dealer_ids[code]))
            for g in range(count):
                cid = chat_id(o, g)
                customers = [
                    state.add_contact(userid, name=f"客户{o}-{g}-{m}")["ExternalUserID"] for m in range(members)
                ]
                state.create_group(userid, f"车友群{o:04d}-{g:04d}", customers, chat_id=cid)
                chats.setdefault(userid, []).append(cid)
                groups.append(
                    {
                        "corp_id": TEST_CORP_ID,
                        "chat_id": cid,
                        "name": f"车友群{o:04d}-{g:04d}",
                        "owner_userid": userid,
                        "dealer_id": dealer_ids[code],
                        "status": "active",
                        "member_version": "",
                        "member_count": members + 1,
                        "notice": "",
                        "tags": [],
                        "wecom_created_at": now,
                        "updated_at": now,
                    }
                )
        await session.flush()
        conn = await session.connection()
        for offset in range(0, len(groups), 5000):
            await conn.execute(insert(CustomerGroup.__table__), groups[offset : offset + 5000])  # type: ignore[attr-defined]
    return chats


def make_state(clock: VirtualClock) -> EmulatorState:
    state = EmulatorState(TEST_CORP_ID, clock=clock, seed=7)
    state.add_app(SECRET, AGENT_ID)
    state.add_staff("operator1", "运营小王")
    return state


@asynccontextmanager
async def campaign_world(
    sessions: SessionFactory, *, start: datetime = FRIDAY_7PM, auto_confirm: bool = True, **settings: Any
) -> AsyncIterator[CampaignWorld]:
    """The world, with the accounts of :data:`tests.users_support.STAFF_ACCOUNTS` (who save and approve)."""
    await add_accounts(sessions)
    clock = VirtualClock(start=start.timestamp())
    state = make_state(clock)
    state.groupmsg_auto_confirm = auto_confirm
    running = await start_emulator(state)
    try:
        async with aiohttp.ClientSession() as http:
            config = make_settings(wecom_api_base=running.base_url, app_secret=SECRET, agent_id=AGENT_ID, **settings)
            client = build_wecom_client(config, http, None, clock=clock.now)
            dispatcher = OutboxDispatcher(
                sessions, client, make_settings(outbox_max_attempts=5), instance_id="campaigns", clock=clock.utcnow
            )
            yield CampaignWorld(state, running, clock, sessions, client, dispatcher)
    finally:
        await running.close()


def later(at: datetime, **delta: float) -> datetime:
    return at + timedelta(**delta)
