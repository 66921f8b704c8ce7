"""After an erasure, events older than it — a callback still in the inbox, a re-delivered add, a stale
externalcontact/get, a message page, a behaviour, a group refetch — bring nothing back; a fresh add by the
customer (later than the erasure) starts a new record. Both databases, through the real sync and ingest code."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, select

from scrm.db import SessionFactory, transaction
from scrm.db_types import utcnow
from scrm.intent.ingest import IncomingBehaviour, IncomingMessage, record_behaviour, store_message
from scrm.links import TrackedLink, record_click
from scrm.models import AuditLog, Contact, FollowRelation, GroupMember, IntentSignal, Message, OutboxCommand
from scrm.privacy.erase import erase_customer
from scrm.privacy.tombstones import is_pseudonym
from scrm.sync import contacts, groups
from tests.domain_support import process_services
from tests.privacy.world import ADMIN, CORP, EU, NAME, PHONE, database_dump, leaked, seed_world


async def _erased_world(factory: SessionFactory) -> datetime:
    await seed_world(factory)
    erased = utcnow()
    async with transaction(factory) as session:
        await erase_customer(session, CORP, EU, actor=ADMIN, now=erased)
    return erased


def _detail(name: str, createtime: datetime) -> dict[str, object]:
    follow = {"userid": "adv01", "remark": NAME, "remark_mobiles": [PHONE], "createtime": int(createtime.timestamp())}
    return {"external_contact": {"external_userid": EU, "name": name}, "follow_user": [follow]}


async def _about_customer(factory: SessionFactory) -> dict[str, int]:
    async with factory() as session:
        return {
            "contacts": len((await session.exec(select(Contact).where(Contact.external_userid == EU))).all()),
            "relations": len(
                (await session.exec(select(FollowRelation).where(FollowRelation.external_userid == EU))).all()
            ),
            "messages": len((await session.exec(select(Message).where(Message.external_userid == EU))).all()),
            "signals": len((await session.exec(select(IntentSignal).where(IntentSignal.external_userid == EU))).all()),
            "members": len((await session.exec(select(GroupMember).where(GroupMember.member_id == EU))).all()),
            "commands": len(
                (await session.exec(select(OutboxCommand).where(col(OutboxCommand.idempotency_key).contains(EU)))).all()
            ),
        }


NOTHING = {"contacts": 0, "relations": 0, "messages": 0, "signals": 0, "members": 0, "commands": 0}


async def _replay_old_events(factory: SessionFactory, before: datetime) -> None:
    services = process_services()
    async with transaction(factory) as session:
        await contacts.on_contact_added(
            session, CORP, userid="adv01", external_userid=EU, state="qr", welcome_code="wc-old", event_time=before
        )
        await contacts.on_contact_edited(session, CORP, userid="adv01", external_userid=EU, event_time=before)
        await contacts.on_staff_deleted_by_contact(session, CORP, userid="adv02", external_userid=EU, event_time=before)
        await contacts.apply_contact_detail(session, CORP, _detail(NAME, before - timedelta(days=9)))
        said = IncomingMessage(
            source="archive", msgid="late-1", sent_at=before, external_userid=EU, text=f"电话{PHONE}"
        )
        stored = await store_message(session, CORP, said, intent=services.intent, hooks=services, now=utcnow())
        assert stored is False
        form = IncomingBehaviour(kind="form", external_userid=EU, ref="form:late", at=before, detail={"phone": PHONE})
        await record_behaviour(session, CORP, form, intent=services.intent, hooks=services)
        member = {"userid": EU, "type": 2, "name": NAME, "join_time": int(before.timestamp()) - 3600}
        await groups.apply_group_detail(session, CORP, {"chat_id": "wr_privacy_group", "member_list": [member]})
        await groups.on_group_updated(
            session,
            CORP,
            chat_id="wr_privacy_group",
            update_detail="add_member",
            event_time=before,
            refetch_delay=0,
            members=[EU],
        )


async def test_events_older_than_the_erasure_bring_nothing_back(
    database_url: str, session_factory: SessionFactory
) -> None:
    erased = await _erased_world(session_factory)
    await _replay_old_events(session_factory, erased - timedelta(seconds=1))
    assert await _about_customer(session_factory) == NOTHING
    assert leaked(await database_dump(database_url)) == []
    async with session_factory() as session:
        kept = (await session.exec(select(GroupMember).where(col(GroupMember.member_id).startswith("erased-")))).one()
    assert kept.left_at is None  # the anonymised member still counts while WeCom lists the customer


async def test_an_event_at_the_erasure_time_is_older_too(session_factory: SessionFactory) -> None:
    erased = await _erased_world(session_factory)
    await _replay_old_events(session_factory, erased)
    assert await _about_customer(session_factory) == NOTHING


async def test_a_fresh_add_after_the_erasure_starts_a_new_record(session_factory: SessionFactory) -> None:
    erased = await _erased_world(session_factory)
    back = erased + timedelta(minutes=5)
    async with transaction(session_factory) as session:
        await contacts.on_contact_added(
            session, CORP, userid="adv03", external_userid=EU, state="", welcome_code="wc-new", event_time=back
        )
    async with transaction(session_factory) as session:
        # WeCom still lists the old relation (created before the erasure) beside the new one: only the new is applied
        detail = _detail("回来的客户", back)
        old = {"userid": "adv01", "remark": NAME, "createtime": int((erased - timedelta(days=9)).timestamp())}
        detail["follow_user"] = [old, *detail["follow_user"]]  # type: ignore[misc]
        detail["follow_user"][1]["userid"] = "adv03"  # type: ignore[index]
        await contacts.apply_contact_detail(session, CORP, detail)
    async with session_factory() as session:
        contact = (await session.exec(select(Contact).where(Contact.external_userid == EU))).one()
        relations = (await session.exec(select(FollowRelation).where(FollowRelation.external_userid == EU))).all()
        anonymised = (
            await session.exec(select(Contact).where(col(Contact.external_userid).startswith("erased-")))
        ).one()
    assert contact.name == "回来的客户" and contact.id != anonymised.id
    assert [r.userid for r in relations] == ["adv03"]
    assert is_pseudonym(anonymised.external_userid) and anonymised.name == "" and anonymised.stage == "intent"


async def test_a_tracked_link_click_records_nothing_until_the_customer_comes_back(
    session_factory: SessionFactory,
) -> None:
    erased = await _erased_world(session_factory)
    link = TrackedLink(url="https://example.com/l7", corp_id=CORP, external_userid=EU, source="sop:nurture:1")
    async with transaction(session_factory) as session:
        assert await record_click(session, link, erased + timedelta(minutes=1)) is None
        audited = (await session.exec(select(AuditLog).where(AuditLog.subject_id == EU))).all()
    assert audited == []
    async with transaction(session_factory) as session:
        await contacts.on_contact_added(
            session,
            CORP,
            userid="adv03",
            external_userid=EU,
            state="",
            welcome_code="",
            event_time=erased + timedelta(1),
        )
    async with transaction(session_factory) as session:
        assert await record_click(session, link, erased + timedelta(days=2)) is not None
