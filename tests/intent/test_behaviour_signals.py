"""Behaviours that count towards the lead score without a form: replies to our pushes and group joins."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from scrm.db import SessionFactory, write_transaction
from scrm.models import CustomerGroup, IntentSignal
from scrm.sync.groups import on_group_updated
from scrm.touches import record_touch
from tests.intent.test_pipeline import RULES_YAML, START, make_contact, store
from tests.sop.support import CORP, installed, services


@pytest.fixture
def sop_dir(tmp_path: Path) -> Path:
    (tmp_path / "intent.yaml").write_text(RULES_YAML, encoding="utf-8")
    return tmp_path


async def signals(factory: SessionFactory, kind: str) -> list[IntentSignal]:
    async with factory() as session:
        return list((await session.exec(select(IntentSignal).where(IntentSignal.kind == kind))).all())


async def test_a_message_soon_after_a_push_is_a_reply_counted_once_per_push(
    session_factory: SessionFactory, sop_dir: Path
) -> None:
    await make_contact(session_factory)
    async with write_transaction(session_factory) as session:
        await record_touch(
            session, CORP, "contact", "wmA", kind="private_message", source="sop", ref="sop:x:s1", at=START
        )
    await store(session_factory, sop_dir, "m1", "好的 收到", at=START + timedelta(hours=2))
    await store(session_factory, sop_dir, "m2", "周末有空", at=START + timedelta(hours=3))
    await store(session_factory, sop_dir, "m3", "在吗", at=START + timedelta(days=3))  # outside the window
    replies = await signals(session_factory, "reply")
    assert [(s.ref, s.detail) for s in replies] == [("reply:sop:x:s1", {"push": "sop:x:s1", "msgid": "m1"})]


async def test_a_customer_joining_a_group_is_a_join_signal(session_factory: SessionFactory, sop_dir: Path) -> None:
    await make_contact(session_factory)
    svc = services()
    svc.holder.directory = sop_dir
    async with write_transaction(session_factory) as session:
        session.add(CustomerGroup(corp_id=CORP, chat_id="wrCAR", name="车友群", owner_userid="zhangsan"))
    with installed(svc) as hooks:
        for _ in range(2):  # a replayed callback adds nothing
            async with write_transaction(session_factory) as session:
                await on_group_updated(
                    session,
                    CORP,
                    chat_id="wrCAR",
                    update_detail="add_member",
                    event_time=START,
                    refetch_delay=0,
                    members=["wmA", "zhangsan"],
                    join_scene=3,
                    hooks=hooks,
                )
    joins = await signals(session_factory, "join")
    joins += await signals(session_factory, "join_group")
    assert [(s.external_userid, s.detail) for s in joins] == [("wmA", {"chat_id": "wrCAR", "join_scene": 3})]
