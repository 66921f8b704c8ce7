"""Customer transfer (在职继承) end to end: the domain request, the outbox executor against the emulator, the
emulated 24 h wait on a virtual clock, the leader's poll, and WeCom's callbacks through our sync handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest
from sqlmodel import col, select

from bot.edge.events import parse_event
from bot.edge.xmlparse import parse_xml_fields
from bot.emulator.base import Fields
from bot.emulator.callbacks import render_xml
from bot.emulator.clock import VirtualClock
from bot.emulator.state import EmulatorState
from bot.outbox.dispatcher import OutboxDispatcher
from bot.runtime.handlers import register_sync_handlers
from bot.runtime.lead_transfers import poll_transfers, transfer_ticks
from bot.runtime.router import HandlerContext, Router
from bot.wecom.client import WeComClient
from scrm.db import SessionFactory, transaction
from scrm.leads.transfers import request_transfer
from scrm.models import (
    CustomerTransfer,
    FollowRelation,
    Lead,
    LeadEvent,
    OutboxCommand,
    StaffNotification,
    TransferStatus,
)
from tests.conftest import TEST_CORP_ID, make_settings
from tests.domain_support import process_services
from tests.outbox.emulated_world import START, make_client, make_dispatcher, make_world, run_until_idle, served

CUSTOMER = "wmHotCustomer01"
DAY = timedelta(days=1)
TRANSFER_API = "externalcontact/transfer_customer"


@dataclass
class World:
    sessions: SessionFactory
    clock: VirtualClock
    state: EmulatorState
    client: WeComClient
    dispatcher: OutboxDispatcher
    router: Router
    ctx: HandlerContext

    async def deliver(self, fields: Fields) -> None:
        """A callback the way the worker gets it: rendered, parsed, routed to our sync handlers."""
        assert await self.router.dispatch(parse_event(parse_xml_fields(render_xml(fields))), self.ctx)

    async def outbox(self) -> None:
        await run_until_idle(self.sessions, self.clock, self.dispatcher)

    async def lead(self, advisor: str = "zhangwei") -> int:
        async with transaction(self.sessions) as session:
            lead = Lead(
                corp_id=TEST_CORP_ID,
                external_userid=CUSTOMER,
                status="assigned",
                advisor_userid=advisor,
                reach="transfer",
            )
            session.add(lead)
            await session.flush()
            assert lead.id is not None
            return lead.id

    async def request(self, lead_id: int, handover: str, takeover: str) -> CustomerTransfer | None:
        async with transaction(self.sessions) as session:
            return await request_transfer(
                session,
                corp_id=TEST_CORP_ID,
                lead_id=lead_id,
                external_userid=CUSTOMER,
                handover_userid=handover,
                takeover_userid=takeover,
                message="您好，我是您的专属顾问",
                now=self.clock.utcnow(),
                lead_url=f"https://lianyi.example.com/leads/{lead_id}",
            )

    async def poll(self) -> int:
        return await poll_transfers(self.sessions, self.client, TEST_CORP_ID, self.clock.utcnow())

    async def transfer(self, transfer_id: int) -> CustomerTransfer:
        async with self.sessions() as session:
            row = await session.get(CustomerTransfer, transfer_id)
            assert row is not None
            return row

    async def events(self, lead_id: int) -> list[str]:
        async with self.sessions() as session:
            rows = await session.exec(select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(col(LeadEvent.id)))
            return [row.kind for row in rows.all()]

    async def relations(self) -> dict[str, str | None]:
        """userid → deleted_source ("" alive) of the customer's follow relations in our database."""
        async with self.sessions() as session:
            rows = await session.exec(select(FollowRelation).where(FollowRelation.external_userid == CUSTOMER))
            return {r.userid: ("" if r.deleted_at is None else r.deleted_source) for r in rows.all()}


@pytest.fixture
async def world(session_factory: SessionFactory, redis_prefix: str) -> AsyncIterator[World]:
    clock = VirtualClock(START.timestamp())
    state = make_world(clock)
    state.add_staff("lisi", "李四", "BJ001")
    router = Router()
    register_sync_handlers(router)
    settings = make_settings()
    ctx = HandlerContext(session_factory, settings, clock.utcnow, lambda: None, process_services(settings.sop_dir))
    async with served(state) as emulator, aiohttp.ClientSession() as http:
        client = make_client(emulator, http, clock, None, redis_prefix)
        world = World(
            session_factory, clock, state, client, make_dispatcher(session_factory, client, clock), router, ctx
        )
        await world.deliver(state.add_contact("brand", CUSTOMER, "李先生", welcome=False))
        await world.outbox()
        yield world


async def test_a_transfer_completes_after_the_wait(world: World) -> None:
    lead_id = await world.lead()
    transfer = await world.request(lead_id, "brand", "zhangwei")
    assert transfer is not None and transfer.id is not None
    await world.outbox()
    assert (await world.transfer(transfer.id)).status == TransferStatus.WAITING.value
    assert world.state.counters.transfers == {CUSTOMER: 1}

    world.clock.advance(1800)
    assert await world.poll() == 1  # WeCom still says "waiting"
    assert (await world.transfer(transfer.id)).status == TransferStatus.WAITING.value
    assert await world.poll() == 0  # asked again only in 30 minutes

    world.clock.advance(DAY.total_seconds())
    for fields in world.state.settle_transfers():
        await world.deliver(fields)
    await world.outbox()
    assert await world.poll() == 1
    row = await world.transfer(transfer.id)
    assert (row.status, row.next_poll_at) == (TransferStatus.DONE.value, None)
    assert await world.events(lead_id) == ["transfer_requested", "transfer_waiting", "transfer_done"]
    assert await world.relations() == {"brand": "DELETE_BY_TRANSFER", "zhangwei": ""}
    async with world.sessions() as session:
        assert (await session.exec(select(StaffNotification))).all() == []


async def test_a_refused_transfer_becomes_an_invite_task(world: World) -> None:
    world.state.transfer_rules.refusing_customers.add(CUSTOMER)
    lead_id = await world.lead()
    transfer = await world.request(lead_id, "brand", "zhangwei")
    assert transfer is not None and transfer.id is not None
    await world.outbox()
    world.clock.advance(DAY.total_seconds())
    (fail,) = world.state.settle_transfers()
    await world.deliver(fail)  # transfer_fail reaches our sync first
    assert (await world.transfer(transfer.id)).status == TransferStatus.REFUSED.value
    assert await world.poll() == 0  # nothing left to ask WeCom about
    async with world.sessions() as session:
        (note,) = (await session.exec(select(StaffNotification))).all()
        lead = await session.get(Lead, lead_id)
    assert (note.userid, note.kind, note.title) == ("zhangwei", "invite_task", "客户转接未成功，请主动邀请")
    assert "客户拒绝" in note.description and note.url.endswith(f"/leads/{lead_id}")
    assert lead is not None and lead.reach == "invite"
    assert await world.relations() == {"brand": ""}
    assert (await world.events(lead_id))[-1] == "transfer_refused"


async def test_the_third_transfer_in_90_days_never_reaches_wecom(world: World) -> None:
    lead_id = await world.lead()
    for handover, takeover in [("brand", "zhangwei"), ("zhangwei", "lisi")]:
        transfer = await world.request(lead_id, handover, takeover)
        assert transfer is not None
        await world.outbox()
        world.clock.advance(DAY.total_seconds() + 1)
        for fields in world.state.settle_transfers():
            await world.deliver(fields)
        await world.outbox()
        world.clock.advance(1800)
        assert await world.poll() == 1
    assert await world.request(lead_id, "lisi", "brand") is None
    await world.outbox()
    assert world.state.counters.transfers == {CUSTOMER: 2}
    assert world.state.counters.api_calls[TRANSFER_API] == 2
    assert world.state.counters.api_errors == {}
    assert await world.relations() == {"brand": "DELETE_BY_TRANSFER", "zhangwei": "DELETE_BY_TRANSFER", "lisi": ""}


async def test_a_retry_after_a_lost_answer_does_not_transfer_twice(world: World) -> None:
    lead_id = await world.lead()
    transfer = await world.request(lead_id, "brand", "zhangwei")
    assert transfer is not None and transfer.id is not None
    world.state.start_transfer("brand", "zhangwei", CUSTOMER, "")  # an earlier attempt got through, unheard
    await world.outbox()
    row = await world.transfer(transfer.id)
    assert (row.status, row.errcode) == (TransferStatus.WAITING.value, 40129)
    assert world.state.counters.transfers == {CUSTOMER: 1}
    world.clock.advance(DAY.total_seconds())
    assert await world.poll() == 1
    assert (await world.transfer(transfer.id)).status == TransferStatus.DONE.value


async def test_a_call_wecom_refuses_fails_the_transfer(world: World) -> None:
    lead_id = await world.lead()
    transfer = await world.request(lead_id, "zhangwei", "lisi")  # zhangwei never added the customer
    assert transfer is not None and transfer.id is not None
    await world.outbox()
    row = await world.transfer(transfer.id)
    assert (row.status, row.errcode) == (TransferStatus.FAILED.value, 84061)
    async with world.sessions() as session:
        command = (
            await session.exec(select(OutboxCommand).where(OutboxCommand.idempotency_key == transfer.command_key))
        ).one()
        (note,) = (await session.exec(select(StaffNotification))).all()
    assert command.status == "done" and command.result == {"external_userid": CUSTOMER, "errcode": 84061}
    assert note.userid == "lisi" and "不是好友关系" in note.description


async def test_the_tick_spec_polls(world: World) -> None:
    (tick,) = transfer_ticks(world.sessions, world.client, TEST_CORP_ID)
    assert (tick.name, tick.every_seconds) == ("lead_transfers", 60.0)
    transfer = await world.request(await world.lead(), "brand", "zhangwei")
    assert transfer is not None and transfer.id is not None
    await world.outbox()
    world.clock.advance(DAY.total_seconds())
    await tick.run(world.clock.utcnow())
    assert (await world.transfer(transfer.id)).status == TransferStatus.DONE.value


async def test_the_client_refuses_more_than_100_customers_before_calling(world: World) -> None:
    calls = world.state.counters.api_calls[TRANSFER_API]
    with pytest.raises(ValueError, match="一次最多转接 100 位客户（当前 101 位）"):
        await world.client.transfer_customer("brand", "zhangwei", [f"wm{i}" for i in range(101)])
    assert world.state.counters.api_calls[TRANSFER_API] == calls
