"""Tracked-link clicks on both databases: another corp's token records nothing; for the score a contact's clicks
of one link count once per 10 minutes from the last counted click, while every click stays recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.web.links import add_link_routes
from scrm.db import SessionFactory, transaction
from scrm.links import CLICK_WINDOW, LinkSigner
from scrm.models import AuditLog, Contact, Corp, IntentSignal
from tests.domain_support import process_services

CORP = "wwclickcorp"
ALICE, BOB = "wmClickAlice", "wmClickBob"
NOT_A_CONTACT = "wmClickKfCustomer"  # a 微信客服 customer: their signals wait for them
BASE = "https://scrm.example.com"
PAGE = "https://www.example.com/cars/model-x"
OTHER_PAGE = "https://www.example.com/cars/model-y"
T0 = datetime(2026, 11, 23, 2, 9, 59, 500000, tzinfo=UTC)  # 1 s later is a new ten-minute slot of the clock

SIGNER = LinkSigner(b"link-clicks-secret", BASE)
LinkClient = TestClient[web.Request, web.Application]


def path(url: str = PAGE, ext: str = ALICE, corp_id: str = CORP) -> str:
    return SIGNER.wrap(url, corp_id=corp_id, external_userid=ext, source="sop:nurture:2").removeprefix(BASE)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def seeded(session_factory: SessionFactory) -> SessionFactory:
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id=CORP))
        await s.flush()
        s.add_all([Contact(corp_id=CORP, external_userid=ALICE), Contact(corp_id=CORP, external_userid=BOB)])
    return session_factory


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(seeded: SessionFactory, clock: Clock) -> AsyncIterator[LinkClient]:
    app = web.Application()
    add_link_routes(app, SIGNER, seeded, clock, corp_id=CORP, services=process_services())
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def click(client: LinkClient, link: str) -> None:
    response = await client.get(link, allow_redirects=False)
    assert response.status == 302


async def recorded(factory: SessionFactory) -> list[AuditLog]:
    async with factory() as s:
        query = select(AuditLog).where(AuditLog.action == "link.clicked").order_by(col(AuditLog.id))
        return list((await s.exec(query)).all())


async def signals(factory: SessionFactory) -> list[tuple[str, datetime]]:
    async with factory() as s:
        rows = (await s.exec(select(IntentSignal).where(IntentSignal.kind == "click"))).all()
    return sorted((r.external_userid, r.at) for r in rows)


async def contact(factory: SessionFactory, ext: str = ALICE) -> Contact:
    async with factory() as s:
        return (await s.exec(select(Contact).where(Contact.external_userid == ext))).one()


async def test_another_corps_token_is_refused_and_records_nothing(seeded: SessionFactory, client: LinkClient) -> None:
    response = await client.get(path(corp_id="wwsomeoneelse"), allow_redirects=False)
    assert response.status == 404
    assert "Location" not in response.headers
    assert "链接无效或已过期" in await response.text()
    assert await recorded(seeded) == []
    assert await signals(seeded) == []
    assert (await contact(seeded)).last_active_at is None


async def test_thirty_reloads_within_ten_minutes_score_once(
    seeded: SessionFactory, client: LinkClient, clock: Clock
) -> None:
    await click(client, path())
    score = (await contact(seeded)).score
    assert score > 0
    for n in range(1, 30):
        clock.at = T0 + timedelta(seconds=20 * n)  # the last one 9 min 40 s after the first
        await click(client, path())
    assert await signals(seeded) == [(ALICE, T0)]
    assert len(await recorded(seeded)) == 30  # every click is kept for reports
    after = await contact(seeded)
    assert after.score == score
    assert after.last_active_at == T0 + timedelta(seconds=580)


async def test_the_window_runs_from_the_last_counted_click(
    seeded: SessionFactory, client: LinkClient, clock: Clock
) -> None:
    moments = [
        T0,
        T0 + timedelta(seconds=1),  # a fixed ten-minute slot of the clock would count this one again
        T0 + CLICK_WINDOW - timedelta(seconds=1),
        T0 + CLICK_WINDOW + timedelta(seconds=1),
        T0 + CLICK_WINDOW + timedelta(minutes=9),
    ]
    for at in moments:
        clock.at = at
        await click(client, path())
    assert await signals(seeded) == [(ALICE, T0), (ALICE, T0 + CLICK_WINDOW + timedelta(seconds=1))]
    assert len(await recorded(seeded)) == len(moments)


async def test_contacts_and_links_count_separately(seeded: SessionFactory, client: LinkClient) -> None:
    for link in (path(), path(ext=BOB), path(OTHER_PAGE), path(), path(ext=BOB), path(OTHER_PAGE)):
        await click(client, link)
    assert await signals(seeded) == [(ALICE, T0), (ALICE, T0), (BOB, T0)]
    assert len(await recorded(seeded)) == 6


@pytest.mark.parametrize("ext", [ALICE, NOT_A_CONTACT])
async def test_racing_clicks_count_once(seeded: SessionFactory, ext: str) -> None:
    """20 clicks at once, each stamped 1 ms after the one before (so their refs differ); a customer who is not
    (yet) a contact has no row whose lock would queue the clicks."""
    stamps = iter(T0 + timedelta(milliseconds=n) for n in range(20))
    app = web.Application()
    add_link_routes(app, SIGNER, seeded, lambda: next(stamps), corp_id=CORP, services=process_services())
    async with TestClient(TestServer(app)) as racing:
        await asyncio.gather(*(click(racing, path(ext=ext)) for _ in range(20)))
    assert [who for who, _ in await signals(seeded)] == [ext]
    assert len(await recorded(seeded)) == 20
