"""Customer transfers (在职继承) in the domain: budget, outbox command, call results, polls, callbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.leads.transfers import (
    POLL_INTERVAL,
    TRANSFERS_PER_90_DAYS,
    apply_call_result,
    apply_transfer_fail,
    apply_transfer_status,
    due_polls,
    request_transfer,
    transfers_used,
)
from scrm.models import CustomerTransfer, Lead, LeadEvent, OutboxCommand, StaffNotification, TransferStatus
from scrm.sync.contacts import on_transfer_failed
from tests.conftest import TEST_CORP_ID
from tests.domain_support import process_services

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CUSTOMER = "wmCustomer0001"
BRAND = "brand_account"
ADVISOR = "zhangwei"
URL = "https://lianyi.example.com/leads/1"


async def make_lead(sessions: SessionFactory, external_userid: str = CUSTOMER) -> int:
    async with transaction(sessions) as session:
        lead = Lead(
            corp_id=TEST_CORP_ID,
            external_userid=external_userid,
            status="assigned",
            advisor_userid=ADVISOR,
            reach="transfer",
        )
        session.add(lead)
        await session.flush()
        assert lead.id is not None
        return lead.id


async def request(
    sessions: SessionFactory,
    lead_id: int | None,
    *,
    now: datetime = NOW,
    external_userid: str = CUSTOMER,
    takeover: str = ADVISOR,
) -> CustomerTransfer | None:
    async with transaction(sessions) as session:
        return await request_transfer(
            session,
            corp_id=TEST_CORP_ID,
            lead_id=lead_id,
            external_userid=external_userid,
            handover_userid=BRAND,
            takeover_userid=takeover,
            message="您好，我是您的专属顾问张伟",
            now=now,
            lead_url=URL,
        )


async def events(sessions: SessionFactory, lead_id: int) -> list[str]:
    async with sessions() as session:
        rows = await session.exec(select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(col(LeadEvent.id)))
        return [row.kind for row in rows.all()]


async def transfer_row(sessions: SessionFactory, transfer_id: int) -> CustomerTransfer:
    async with sessions() as session:
        row = await session.get(CustomerTransfer, transfer_id)
        assert row is not None
        return row


async def lead_row(sessions: SessionFactory, lead_id: int) -> Lead:
    async with sessions() as session:
        row = await session.get(Lead, lead_id)
        assert row is not None
        return row


async def notifications(sessions: SessionFactory) -> list[StaffNotification]:
    async with sessions() as session:
        return list((await session.exec(select(StaffNotification))).all())


async def waiting_transfer(sessions: SessionFactory, lead_id: int) -> int:
    transfer = await request(sessions, lead_id)
    assert transfer is not None and transfer.id is not None
    async with transaction(sessions) as session:
        await apply_call_result(session, transfer.id, errcode=0, now=NOW)
    return transfer.id


async def test_request_writes_the_row_and_one_command(session_factory: SessionFactory) -> None:
    lead_id = await make_lead(session_factory)
    first = await request(session_factory, lead_id)
    again = await request(session_factory, lead_id)
    assert first is not None and again is not None and again.id == first.id
    assert first.status == TransferStatus.REQUESTED.value
    async with session_factory() as session:
        commands = (await session.exec(select(OutboxCommand))).all()
    assert [(c.kind, c.idempotency_key) for c in commands] == [(CommandKind.TRANSFER_CUSTOMER.value, first.command_key)]
    assert commands[0].payload == {
        "transfer_id": first.id,
        "handover_userid": BRAND,
        "takeover_userid": ADVISOR,
        "external_userid": CUSTOMER,
        "transfer_success_msg": "您好，我是您的专属顾问张伟",
        "lead_url": URL,
    }
    assert await events(session_factory, lead_id) == ["transfer_requested"]


async def test_the_third_transfer_in_90_days_is_refused_locally(session_factory: SessionFactory) -> None:
    for day, advisor in [(0, "a1"), (30, "a2")]:
        transfer = await request(session_factory, None, now=NOW + timedelta(days=day), takeover=advisor)
        assert transfer is not None and transfer.id is not None
        async with transaction(session_factory) as session:
            await apply_call_result(session, transfer.id, errcode=0, now=NOW + timedelta(days=day))
            taken = NOW + timedelta(days=day, hours=24)
            await apply_transfer_status(session, transfer.id, status=1, takeover_time=int(taken.timestamp()), now=taken)
    async with session_factory() as session:
        assert await transfers_used(session, TEST_CORP_ID, CUSTOMER, now=NOW + timedelta(days=60)) == 2
        assert await transfers_used(session, TEST_CORP_ID, CUSTOMER, now=NOW + timedelta(days=91)) == 1
    assert await request(session_factory, None, now=NOW + timedelta(days=60), takeover="a3") is None
    # 90 days after the first one, one transfer is available again
    assert await request(session_factory, None, now=NOW + timedelta(days=91), takeover="a3") is not None
    assert TRANSFERS_PER_90_DAYS == 2


async def test_one_transfer_of_a_customer_at_a_time(session_factory: SessionFactory) -> None:
    first = await request(session_factory, None, takeover="a1")
    assert first is not None and first.id is not None
    assert await request(session_factory, None, takeover="a2") is None  # unanswered: it may still be accepted
    async with transaction(session_factory) as session:
        await apply_call_result(session, first.id, errcode=0, now=NOW)
    assert await request(session_factory, None, takeover="a2", now=NOW + timedelta(days=2)) is None  # waiting
    async with transaction(session_factory) as session:
        await apply_transfer_status(session, first.id, status=3, takeover_time=None, now=NOW + timedelta(days=2))
    assert await request(session_factory, None, takeover="a2", now=NOW + timedelta(days=2)) is not None


async def test_unanswered_requests_count_against_the_budget(session_factory: SessionFactory) -> None:
    assert await request(session_factory, None, takeover="a1") is not None
    assert await request(session_factory, None, takeover="a3") is None
    # a request whose command never got an answer for a day (it died) no longer holds the budget
    assert await request(session_factory, None, takeover="a3", now=NOW + timedelta(days=1, seconds=1)) is not None


async def test_a_failed_call_does_not_use_the_budget(session_factory: SessionFactory) -> None:
    lead_id = await make_lead(session_factory)
    transfer = await request(session_factory, lead_id)
    assert transfer is not None and transfer.id is not None
    async with transaction(session_factory) as session:
        await apply_call_result(session, transfer.id, errcode=84061, now=NOW)
    async with session_factory() as session:
        assert await transfers_used(session, TEST_CORP_ID, CUSTOMER, now=NOW) == 0


@pytest.mark.parametrize("errcode", [0, 40129])
async def test_an_accepted_call_waits_and_is_polled(session_factory: SessionFactory, errcode: int) -> None:
    lead_id = await make_lead(session_factory)
    transfer = await request(session_factory, lead_id)
    assert transfer is not None and transfer.id is not None
    async with transaction(session_factory) as session:
        await apply_call_result(session, transfer.id, errcode=errcode, now=NOW)
        await apply_call_result(session, transfer.id, errcode=84061, now=NOW)  # a replay changes nothing
    row = await transfer_row(session_factory, transfer.id)
    assert row.status == TransferStatus.WAITING.value
    async with session_factory() as session:
        assert await due_polls(session, TEST_CORP_ID, now=NOW, limit=10) == []
        due = await due_polls(session, TEST_CORP_ID, now=NOW + POLL_INTERVAL, limit=10)
    assert [t.id for t in due] == [transfer.id]
    assert await events(session_factory, lead_id) == ["transfer_requested", "transfer_waiting"]
    assert await notifications(session_factory) == []


async def test_a_refused_call_fails_and_asks_the_advisor_to_invite(session_factory: SessionFactory) -> None:
    lead_id = await make_lead(session_factory)
    transfer = await request(session_factory, lead_id)
    assert transfer is not None and transfer.id is not None
    async with transaction(session_factory) as session:
        await apply_call_result(session, transfer.id, errcode=84061, now=NOW)
    row = await transfer_row(session_factory, transfer.id)
    assert (row.status, row.errcode, row.next_poll_at) == (TransferStatus.FAILED.value, 84061, None)
    assert (await lead_row(session_factory, lead_id)).reach == "invite"
    assert await events(session_factory, lead_id) == ["transfer_requested", "transfer_failed"]
    (note,) = await notifications(session_factory)
    assert (note.userid, note.kind, note.title, note.url, note.lead_id) == (
        ADVISOR,
        "invite_task",
        "客户转接未成功，请主动邀请",
        URL,
        lead_id,
    )
    assert note.key == f"lead:{lead_id}:transfer_failed:{transfer.id}"
    assert "不是好友关系" in note.description


async def test_poll_statuses(session_factory: SessionFactory) -> None:
    lead_id = await make_lead(session_factory)
    transfer_id = await waiting_transfer(session_factory, lead_id)
    later = NOW + POLL_INTERVAL
    async with transaction(session_factory) as session:
        await apply_transfer_status(session, transfer_id, status=2, takeover_time=None, now=later)
    assert (await transfer_row(session_factory, transfer_id)).next_poll_at == later + POLL_INTERVAL
    takeover = int((NOW + timedelta(days=1)).timestamp())
    async with transaction(session_factory) as session:
        await apply_transfer_status(session, transfer_id, status=1, takeover_time=takeover, now=later)
        await apply_transfer_status(session, transfer_id, status=3, takeover_time=None, now=later)  # settled
    row = await transfer_row(session_factory, transfer_id)
    assert (row.status, row.next_poll_at, row.result_at) == (TransferStatus.DONE.value, None, later)
    assert (await lead_row(session_factory, lead_id)).reach == "transfer"
    assert await events(session_factory, lead_id) == ["transfer_requested", "transfer_waiting", "transfer_done"]
    assert await notifications(session_factory) == []


@pytest.mark.parametrize(("status", "expected", "reason"), [(3, "refused", "拒绝"), (4, "limit", "上限")])
async def test_refusal_and_limit_ask_for_an_invite(
    session_factory: SessionFactory, status: int, expected: str, reason: str
) -> None:
    lead_id = await make_lead(session_factory)
    transfer_id = await waiting_transfer(session_factory, lead_id)
    async with transaction(session_factory) as session:
        await apply_transfer_status(session, transfer_id, status=status, takeover_time=None, now=NOW)
    assert (await transfer_row(session_factory, transfer_id)).status == expected
    assert (await lead_row(session_factory, lead_id)).reach == "invite"
    assert (await events(session_factory, lead_id))[-1] == "transfer_refused"
    (note,) = await notifications(session_factory)
    assert reason in note.description


async def test_an_unknown_status_is_refused_with_a_message(session_factory: SessionFactory) -> None:
    transfer_id = await waiting_transfer(session_factory, await make_lead(session_factory))
    async with transaction(session_factory) as session:
        with pytest.raises(ValueError, match="未知的转接状态 9"):
            await apply_transfer_status(session, transfer_id, status=9, takeover_time=None, now=NOW)
    assert (await transfer_row(session_factory, transfer_id)).status == TransferStatus.WAITING.value


async def test_bad_requests_are_refused_and_write_nothing(session_factory: SessionFactory) -> None:
    async with transaction(session_factory) as session:
        with pytest.raises(ValueError, match="最多 200 个字"):
            await request_transfer(
                session,
                corp_id=TEST_CORP_ID,
                lead_id=None,
                external_userid=CUSTOMER,
                handover_userid=BRAND,
                takeover_userid=ADVISOR,
                message="长" * 201,
                now=NOW,
            )
        with pytest.raises(ValueError, match="两个不同的成员账号"):
            await request_transfer(
                session,
                corp_id=TEST_CORP_ID,
                lead_id=None,
                external_userid=CUSTOMER,
                handover_userid=ADVISOR,
                takeover_userid=ADVISOR,
                message="",
                now=NOW,
            )
    async with session_factory() as session:
        assert (await session.exec(select(CustomerTransfer))).all() == []
        assert (await session.exec(select(OutboxCommand))).all() == []


@pytest.mark.parametrize(("reason", "expected"), [("customer_refused", "refused"), ("customer_limit_exceed", "limit")])
async def test_the_transfer_fail_callback_settles_the_waiting_transfer(
    session_factory: SessionFactory, reason: str, expected: str
) -> None:
    lead_id = await make_lead(session_factory)
    transfer_id = await waiting_transfer(session_factory, lead_id)
    for _ in range(2):  # a replayed callback settles nothing more
        async with transaction(session_factory) as session:
            await on_transfer_failed(
                session,
                TEST_CORP_ID,
                userid=ADVISOR,
                external_userid=CUSTOMER,
                fail_reason=reason,
                event_time=NOW + timedelta(hours=3),
                hooks=process_services(),
            )
    assert (await transfer_row(session_factory, transfer_id)).status == expected
    assert len(await notifications(session_factory)) == 1
    async with transaction(session_factory) as session:
        assert (
            await apply_transfer_fail(
                session, TEST_CORP_ID, takeover_userid="other", external_userid=CUSTOMER, fail_reason=reason, now=NOW
            )
            == 0
        )
