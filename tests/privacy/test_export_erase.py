"""``export`` returns every row about the customer, table by table; ``erase`` leaves none of their name, phone
numbers or message texts anywhere in a full dump of the database (pg_dump / sqlite iterdump), keeps the counts,
cancels what was still to be sent to them, and is a no-op the second time. Both databases."""

from __future__ import annotations

import json
import re

from sqlmodel import select

from scrm.db import SessionFactory, transaction
from scrm.db_types import utcnow
from scrm.models import (
    AuditLog,
    CommandStatus,
    CustomerTransfer,
    InboxEvent,
    Lead,
    OutboxCommand,
    SopEnrolment,
    StaffNotification,
)
from scrm.privacy.erase import CANCELLED_BY_ERASURE, Erasure, erase_customer
from scrm.privacy.export import export_customer
from scrm.privacy.holdings import HOLDINGS
from tests.privacy.world import (
    ADMIN,
    CORP,
    EU,
    NAME,
    OTHER,
    OTHER_NAME,
    OTHER_TEXT,
    SECRETS,
    TEXTS,
    database_dump,
    leaked,
    row_counts,
    seed_world,
)


async def _export(factory: SessionFactory, external_userid: str = EU) -> dict[str, object]:
    async with transaction(factory) as session:
        return await export_customer(session, CORP, external_userid, actor=ADMIN, now=utcnow())


async def _erase(factory: SessionFactory) -> Erasure:
    async with transaction(factory) as session:
        return await erase_customer(session, CORP, EU, actor=ADMIN, now=utcnow())


async def test_export_holds_every_row_about_the_customer_in_every_table(session_factory: SessionFactory) -> None:
    seeded = await seed_world(session_factory)
    document = await _export(session_factory)
    tables = document["tables"]
    assert isinstance(tables, dict)
    assert set(tables) == {h.table for h in HOLDINGS}
    assert set(seeded.ids) == set(tables), "the world must give the customer a row in every exported table"
    for table, rows in tables.items():
        assert {row["id"] for row in rows} == seeded.ids[table], table
    assert tables["contacts"][0]["name"] == NAME
    assert [m["text"] for m in tables["messages"]] == list(TEXTS)
    text = json.dumps(document, ensure_ascii=False)
    assert OTHER_NAME not in text and OTHER_TEXT not in text  # nothing about the bystander
    assert document["external_userid"] == EU and document["erased_at"] is None


async def test_erase_leaves_nothing_personal_in_a_full_dump(database_url: str, session_factory: SessionFactory) -> None:
    await seed_world(session_factory)
    assert leaked(await database_dump(database_url)) == list(SECRETS)  # the dump does see them before
    before = await row_counts(session_factory)

    erasure = await _erase(session_factory)

    dump = await database_dump(database_url)
    assert leaked(dump) == []
    assert leaked(dump, (OTHER, OTHER_NAME, OTHER_TEXT)) == [OTHER, OTHER_NAME, OTHER_TEXT]
    expected = {**before, "dead_letters": before["dead_letters"] - 1, "audit_log": before["audit_log"] + 1}
    expected["staff_notifications"] -= 1  # the unsent reminder
    expected.update(privacy_keys=1, privacy_tombstones=1)
    assert await row_counts(session_factory) == expected  # rows kept for the counts, none added but the audit
    assert erasure.counts["messages"] == len(TEXTS) and erasure.counts["dead_letters"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", erasure.subject_hash)


async def test_erase_cancels_what_was_still_to_be_sent(session_factory: SessionFactory) -> None:
    await seed_world(session_factory)
    await _erase(session_factory)
    async with session_factory() as session:
        commands = {c.kind: c for c in (await session.exec(select(OutboxCommand))).all()}
        enrolment = (await session.exec(select(SopEnrolment))).one()
        inbox = (await session.exec(select(InboxEvent))).all()
        audit = (await session.exec(select(AuditLog).where(AuditLog.action == "privacy.erased"))).one()
        lead = (await session.exec(select(Lead))).one()
        transfer = (await session.exec(select(CustomerTransfer))).one()
        notes = (await session.exec(select(StaffNotification))).all()
    welcome = commands["send_welcome"]
    assert (welcome.status, welcome.last_error) == (CommandStatus.FAILED.value, CANCELLED_BY_ERASURE)
    batch = commands["add_msg_template"]  # still goes to the bystander, without the customer
    assert batch.status == CommandStatus.PENDING.value
    assert batch.payload["external_userid"] == [OTHER] and batch.payload["text"] == {"content": "春季试驾"}
    assert (enrolment.status, enrolment.end_reason, enrolment.next_due_at) == ("cancelled", "erased", None)
    assert {e.status for e in inbox} == {"done"}
    assert (lead.status, lead.status_before_lost, lead.lost_reason, lead.next_check_at) == (
        "lost",
        "assigned",
        "erased",
        None,
    )
    assert lead.closed_at is not None and transfer.next_poll_at is None
    assert [n.status for n in notes] == ["sent"]
    assert audit.actor == ADMIN and audit.detail is not None and audit.detail["counts"]["leads"] == 1


async def test_a_second_erase_changes_nothing(session_factory: SessionFactory) -> None:
    await seed_world(session_factory)
    first = await _erase(session_factory)
    counts = await row_counts(session_factory)
    second = await _erase(session_factory)
    assert first.changed and not second.changed
    assert second.previously_erased_at is not None and second.subject_hash == first.subject_hash
    assert await row_counts(session_factory) == counts
    document = await _export(session_factory)
    tables = document["tables"]
    assert isinstance(tables, dict) and all(rows == [] for rows in tables.values())
    assert document["erased_at"] is not None
