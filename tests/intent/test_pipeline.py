"""The pipeline on both databases: classify, signals, score with reasons, level and stage, replays, behaviours."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from scrm.db import SessionFactory, write_transaction
from scrm.errors import DomainError
from scrm.intent.pipeline import on_behaviour, on_message_stored
from scrm.intent.rules import IntentRules
from scrm.lifecycle import LifecycleHooks
from scrm.models import AuditLog, Contact, FollowRelation, IntentSignal, LeadScoreChange, Message, OutboxCommand
from scrm.rows import ensure_corp
from tests.domain_support import intent_for, process_services
from tests.sop.support import CORP, add_contact, bundle, enrolments, installed, seed, services

START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # Monday 10:00 China time
RULES_YAML = """
version: 1
settings: {saturation: 8, min_weight: 2}
modifiers:
  negation: {cues: [不考虑], factor: 0}
intents:
  price: {keywords: {多少钱: 6, 落地价: 6}}
  test_drive: {keywords: {试驾: 8}}
  purchase: {keywords: {定车: 10}}
  complaint: {keywords: {投诉: 8}}
lost:
  keywords: {买了别的: 10}
scoring:
  half_life_days: 7
  levels: {H: 80, A: 60, B: 35}
  behaviours: {click: 4, form: 25, test_drive_booking: 40, join_group: 6, reply: 3}
  intent_weights: {price: 12, test_drive: 18, purchase: 30, complaint: -5, lost: -40}
  lost_stage_on: [lost]
tags:
  group: 意向标签
  level_group: 意向等级
  stage_group: 客户阶段
  intents: {price: 询价, finance: 金融贷款, test_drive: 试驾, trade_in: 置换, delivery: 提车交付, config: 配置咨询,
            purchase: 购车意向, after_sales: 售后, complaint: 投诉, lost: 战败信号}
  levels: {H: H级, A: A级, B: B级, C: C级}
  stages: {prospect: 潜客, intent: 意向客户, owner: 车主, lost: 战败}
"""


def strength(weight: float, saturation: float = 8) -> float:
    return 1 - math.exp(-weight / saturation)


@pytest.fixture
def sop_dir(tmp_path: Path) -> Path:
    (tmp_path / "intent.yaml").write_text(RULES_YAML, encoding="utf-8")
    return tmp_path


async def make_contact(
    factory: SessionFactory, external_userid: str = "wmA", *, staff: tuple[str, ...] = ("zhangsan",), stage: str = ""
) -> None:
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        contact = Contact(corp_id=CORP, external_userid=external_userid, name="王先生")
        if stage:
            contact.stage = stage
        session.add(contact)
        for userid in staff:
            session.add(FollowRelation(corp_id=CORP, external_userid=external_userid, userid=userid, added_at=START))


async def store(
    factory: SessionFactory,
    sop_dir: Path,
    msgid: str,
    text: str,
    *,
    at: datetime,
    external_userid: str = "wmA",
    sender_type: str = "customer",
    msgtype: str = "text",
    now: datetime | None = None,
    hooks: LifecycleHooks | None = None,
) -> None:
    """Store and score one message; ``hooks``: the process's services (default: no SOP engine, no handoff)."""
    async with write_transaction(factory) as session:
        await ensure_corp(session, CORP)
        message = Message(
            corp_id=CORP,
            source="kf",
            msgid=msgid,
            external_userid=external_userid,
            userid="zhangsan",
            sender_type=sender_type,
            msgtype=msgtype,
            text=text,
            sent_at=at,
        )
        session.add(message)
        await session.flush()
        await on_message_stored(
            session, CORP, message, intent=intent_for(sop_dir), hooks=hooks or process_services(sop_dir), now=now or at
        )


async def replay(factory: SessionFactory, sop_dir: Path, msgid: str, *, now: datetime) -> None:
    async with write_transaction(factory) as session:
        message = (await session.exec(select(Message).where(Message.msgid == msgid))).one()
        await on_message_stored(
            session, CORP, message, intent=intent_for(sop_dir), hooks=process_services(sop_dir), now=now
        )


async def contact(factory: SessionFactory, external_userid: str = "wmA") -> Contact:
    async with factory() as session:
        return (await session.exec(select(Contact).where(Contact.external_userid == external_userid))).one()


async def score_changes(factory: SessionFactory) -> list[LeadScoreChange]:
    async with factory() as session:
        return list((await session.exec(select(LeadScoreChange).order_by(col(LeadScoreChange.id)))).all())


async def counts(factory: SessionFactory) -> tuple[int, ...]:
    async with factory() as session:
        result = []
        for model in (IntentSignal, LeadScoreChange, OutboxCommand, AuditLog):
            result.append((await session.exec(select(func.count()).select_from(model))).one())
    return tuple(result)


async def test_a_customer_message_is_classified_scored_and_explained(
    session_factory: SessionFactory, sop_dir: Path
) -> None:
    await make_contact(session_factory)
    await store(session_factory, sop_dir, "m1", "这车落地价多少钱？能试驾吗", at=START)

    async with session_factory() as session:
        message = (await session.exec(select(Message))).one()
        signals = (await session.exec(select(IntentSignal).order_by(col(IntentSignal.code)))).all()
    assert (message.primary_intent, message.intents, message.classified_at) == ("price", ["price", "test_drive"], START)
    price, drive = 12 * strength(12), 18 * strength(8)
    assert [(s.code, s.ref, s.kind, s.weight) for s in signals] == [
        ("price", "msg:kf:m1", "message", round(price, 2)),
        ("test_drive", "msg:kf:m1", "message", round(drive, 2)),
    ]
    expected = round(round(price, 2) + round(drive, 2))
    row = await contact(session_factory)
    assert (row.score, row.intent_level, row.stage, row.last_active_at) == (expected, "C", "prospect", START)
    (change,) = await score_changes(session_factory)
    assert (change.score_before, change.score_after, change.level_before, change.level_after) == (0, expected, "", "C")
    assert {(r["ref"], r["code"]) for r in change.reasons} == {("msg:kf:m1", "price"), ("msg:kf:m1", "test_drive")}


async def test_replaying_a_message_changes_nothing(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    await store(session_factory, sop_dir, "m1", "想定车，落地价多少钱", at=START)
    before, row = await counts(session_factory), await contact(session_factory)
    await replay(session_factory, sop_dir, "m1", now=START)
    await replay(session_factory, sop_dir, "m1", now=START + timedelta(days=3))
    after = await contact(session_factory)
    assert await counts(session_factory) == before
    assert (after.score, after.intent_level, after.stage) == (row.score, row.intent_level, row.stage)


async def test_staff_and_non_text_messages_are_skipped(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    await store(session_factory, sop_dir, "s1", "试驾多少钱都可以谈", at=START, sender_type="staff")
    await store(session_factory, sop_dir, "i1", "试驾", at=START, msgtype="image")
    async with session_factory() as session:
        assert all(m.classified_at is None for m in (await session.exec(select(Message))).all())
    assert await counts(session_factory) == (0, 0, 0, 0)
    assert (await contact(session_factory)).last_active_at is None


async def test_level_a_moves_a_prospect_to_intent_and_decay_is_recorded(
    session_factory: SessionFactory, sop_dir: Path
) -> None:
    await make_contact(session_factory)
    await store(session_factory, sop_dir, "m1", "定车！试驾！", at=START)
    row = await contact(session_factory)
    expected = round(round(30 * strength(10), 2) + round(18 * strength(8), 2))
    assert (row.score, row.intent_level, row.stage) == (expected, "C", "prospect")
    async with write_transaction(session_factory) as session:
        await on_behaviour(
            session,
            CORP,
            "wmA",
            kind="form",
            ref="form:77",
            at=START + timedelta(hours=1),
            detail={"form_type": "test_drive"},
            intent=intent_for(sop_dir),
            hooks=process_services(sop_dir),
        )
    row = await contact(session_factory)
    assert (row.intent_level, row.stage) == ("A", "intent")
    async with session_factory() as session:
        audits = (await session.exec(select(AuditLog.action).order_by(col(AuditLog.id)))).all()
    assert list(audits) == ["contact.intent_level", "contact.intent_level", "contact.stage_changed"]
    # a week later (one half-life) the next message rescoring shows the decay
    later = START + timedelta(days=7, hours=1)
    await store(session_factory, sop_dir, "m2", "好的谢谢", at=later)
    last = (await score_changes(session_factory))[-1]
    assert last.score_before == row.score and last.score_after < row.score
    assert last.stage_after == "intent" and last.reasons[0]["code"] == "test_drive_booking"


async def test_a_lost_signal_makes_the_lead_lost_but_never_an_owner(
    session_factory: SessionFactory, sop_dir: Path
) -> None:
    await make_contact(session_factory, "wmA")
    await make_contact(session_factory, "wmOwner", stage="owner")
    for ext in ("wmA", "wmOwner"):
        await store(session_factory, sop_dir, f"t-{ext}", "试驾", at=START, external_userid=ext)
        await store(
            session_factory, sop_dir, f"l-{ext}", "已经买了别的车", at=START + timedelta(hours=1), external_userid=ext
        )
    lost, owner = await contact(session_factory, "wmA"), await contact(session_factory, "wmOwner")
    assert (lost.stage, lost.score, lost.intent_level) == ("lost", 0, "C")
    assert owner.stage == "owner"
    change = (await score_changes(session_factory))[-1]
    assert change.reasons[0]["code"] == "lost" and change.reasons[0]["points"] < 0


async def test_behaviours_score_once_per_ref(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    for _ in range(2):
        async with write_transaction(session_factory) as session:
            await on_behaviour(
                session,
                CORP,
                "wmA",
                kind="click",
                ref="click:tok1:1",
                at=START,
                intent=intent_for(sop_dir),
                hooks=process_services(sop_dir),
            )
    async with write_transaction(session_factory) as session:
        await on_behaviour(
            session,
            CORP,
            "wmA",
            kind="join",
            ref="join:wrX",
            at=START,
            intent=intent_for(sop_dir),
            hooks=process_services(sop_dir),
        )
    async with session_factory() as session:
        signals = (await session.exec(select(IntentSignal).order_by(col(IntentSignal.id)))).all()
    assert [(s.kind, s.code, s.weight) for s in signals] == [("click", "click", 4), ("join", "join_group", 6)]
    row = await contact(session_factory)
    assert (row.score, row.last_active_at) == (10, START)
    assert [c.score_after for c in await score_changes(session_factory)] == [4, 10]
    with pytest.raises(DomainError):
        async with write_transaction(session_factory) as session:
            await on_behaviour(
                session,
                CORP,
                "wmA",
                kind="favourite",
                ref="x",
                at=START,
                intent=intent_for(sop_dir),
                hooks=process_services(sop_dir),
            )


async def test_a_customer_who_is_not_a_contact_keeps_signals_only(
    session_factory: SessionFactory, sop_dir: Path
) -> None:
    await store(session_factory, sop_dir, "k1", "落地价多少钱", at=START, external_userid="wmKfOnly")
    signals, changes, commands, audits = await counts(session_factory)
    assert (signals, changes, commands, audits) == (1, 0, 0, 0)


async def test_negated_intent_gives_no_signal(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    await store(session_factory, sop_dir, "n1", "暂时不考虑试驾", at=START)
    async with session_factory() as session:
        message = (await session.exec(select(Message))).one()
    assert message.primary_intent == "other"
    assert (await counts(session_factory))[0] == 0


async def test_the_sop_keyword_trigger_runs_after_scoring(session_factory: SessionFactory, sop_dir: Path) -> None:
    await seed(session_factory)
    keyword = bundle(
        """
id: drive_keyword
name: 试驾关键词
kind: contact
trigger: {event: message.keyword, keywords: [试驾], scope: single}
steps:
  - private_message: {text: "欢迎预约试驾"}
"""
    )
    with installed(services(keyword)) as hooks:
        await add_contact(session_factory, "wmA", at=START, hooks=hooks)
        await store(session_factory, sop_dir, "m1", "想试驾", at=START + timedelta(minutes=5), hooks=hooks)
    assert [(e.template_id, e.occurrence) for e in await enrolments(session_factory)] == [("drive_keyword", "msg:m1")]
    assert (await contact(session_factory)).score > 0


async def test_broken_rules_leave_messages_unclassified_and_use_default_behaviour_weights(
    session_factory: SessionFactory, tmp_path: Path
) -> None:
    (tmp_path / "intent.yaml").write_text("scoring: {half_life_days: -1}\n", encoding="utf-8")
    await make_contact(session_factory)
    await store(session_factory, tmp_path, "m1", "落地价多少钱", at=START)
    async with session_factory() as session:
        assert (await session.exec(select(Message))).one().classified_at is None
    async with write_transaction(session_factory) as session:
        await on_behaviour(
            session,
            CORP,
            "wmA",
            kind="test_drive_booking",
            ref="form:1",
            at=START,
            intent=intent_for(tmp_path),
            hooks=process_services(tmp_path),
        )
    assert (await contact(session_factory)).score == round(IntentRules().scoring.behaviours["test_drive_booking"])
