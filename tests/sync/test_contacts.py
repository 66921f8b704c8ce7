"""Contact callbacks and externalcontact/get on both databases: effects, replays, ordering."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import AuditLog, Contact, ContactTag, Corp, Dealer, FollowRelation, Staff
from scrm.sync import contacts
from tests.domain_support import WELCOME_ONLY_SOP, sop_process_services
from tests.sync.helpers import CORP, T0, commands, dump, rows

SOP_DIR = Path(__file__).resolve().parents[2] / "sop_templates"
EXT = "wmAAAAcustomer0001"
STATE = "L1~q~BJ001~zhangsan"


@pytest.fixture
async def seeded(session_factory: SessionFactory) -> SessionFactory:
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id=CORP, name="测试品牌"))
        await s.flush()
        dealer = Dealer(corp_id=CORP, code="BJ001", name="北京望京4S店", city="北京")
        s.add(dealer)
        await s.flush()
        s.add(Staff(corp_id=CORP, userid="zhangsan", name="张三", dealer_id=dealer.id))
    return session_factory


async def _added(
    factory: SessionFactory, *, at: Any = T0, code: str = "WC1", sop_dir: Path = SOP_DIR, **kw: Any
) -> None:
    """The add as a process running the SOP templates of ``sop_dir`` handles it (their welcome step answers)."""
    args: dict[str, Any] = {
        "userid": "zhangsan",
        "external_userid": EXT,
        "state": STATE,
        "welcome_code": code,
        "event_time": at,
        "hooks": sop_process_services(sop_dir),
    }
    args.update(kw)
    async with transaction(factory) as s:
        await contacts.on_contact_added(s, CORP, **args)


async def _deleted(factory: SessionFactory, *, at: Any, source: str = "", userid: str = "zhangsan") -> None:
    async with transaction(factory) as s:
        await contacts.on_deleted_by_staff(s, CORP, userid=userid, external_userid=EXT, source=source, event_time=at)


async def _relation(factory: SessionFactory, userid: str = "zhangsan") -> FollowRelation:
    [relation] = await rows(factory, FollowRelation, FollowRelation.userid == userid)
    return relation


async def test_added_records_relation_channel_and_commands(seeded: SessionFactory) -> None:
    await _added(seeded)
    [contact] = await rows(seeded, Contact)
    assert contact.external_userid == EXT and contact.name == ""
    relation = await _relation(seeded)
    assert (relation.channel, relation.dealer_code, relation.advisor_userid) == ("qr", "BJ001", "zhangsan")
    assert relation.state == STATE and relation.added_at == T0 and relation.deleted_at is None
    assert not relation.half_added
    [fetch] = await commands(seeded, CommandKind.FETCH_CONTACT)
    assert fetch.idempotency_key == f"fetch_contact:{EXT}:{int(T0.timestamp())}"
    assert fetch.payload == {"external_userid": EXT}
    [welcome] = await commands(seeded, CommandKind.SEND_WELCOME)
    assert welcome.idempotency_key == "welcome:WC1"
    assert welcome.deadline == T0 + timedelta(seconds=20)
    assert welcome.payload["template"] == "qr.j2"
    assert "张三" in welcome.payload["text"]["content"] and "北京望京4S店" in welcome.payload["text"]["content"]
    assert welcome.payload["userid"] == "zhangsan" and welcome.payload["external_userid"] == EXT


async def test_added_replay_changes_nothing(seeded: SessionFactory) -> None:
    await _added(seeded)
    before = await dump(seeded)
    await _added(seeded)
    assert await dump(seeded) == before


async def test_without_welcome_code_no_welcome(seeded: SessionFactory) -> None:
    await _added(seeded, code="")
    assert await commands(seeded, CommandKind.SEND_WELCOME) == []
    assert len(await commands(seeded, CommandKind.FETCH_CONTACT)) == 1


async def test_half_added_then_full(seeded: SessionFactory) -> None:
    await _added(seeded, half=True, code="")
    assert (await _relation(seeded)).half_added
    await _added(seeded, at=T0 + timedelta(seconds=30), code="")
    relation = await _relation(seeded)
    assert not relation.half_added and relation.added_at == T0 + timedelta(seconds=30)


async def test_foreign_state_keeps_raw_and_default_welcome(seeded: SessionFactory) -> None:
    await _added(seeded, state="douyin_0501")
    relation = await _relation(seeded)
    assert relation.state == "douyin_0501" and relation.channel == "" and relation.dealer_code == ""
    [welcome] = await commands(seeded, CommandKind.SEND_WELCOME)
    assert welcome.payload["template"] == "default.j2"
    assert "北京望京4S店" in welcome.payload["text"]["content"]  # dealer from the staff member when the state has none


async def test_re_add_after_delete_clears_deletion(seeded: SessionFactory) -> None:
    await _added(seeded)
    await _deleted(seeded, at=T0 + timedelta(minutes=5))
    relation = await _relation(seeded)
    assert relation.deleted_at == T0 + timedelta(minutes=5) and relation.deleted_by == "staff"
    await _added(seeded, at=T0 + timedelta(minutes=10), code="WC2")
    relation = await _relation(seeded)
    assert relation.deleted_at is None and relation.deleted_by is None
    assert relation.added_at == T0 + timedelta(minutes=10)
    assert {c.idempotency_key for c in await commands(seeded, CommandKind.SEND_WELCOME)} == {
        "welcome:WC1",
        "welcome:WC2",
    }


async def test_stale_add_after_delete_does_not_resurrect(seeded: SessionFactory) -> None:
    await _deleted(seeded, at=T0 + timedelta(minutes=5))  # the deletion overtook the add
    relation = await _relation(seeded)
    assert relation.deleted_at == T0 + timedelta(minutes=5) and relation.added_at is None
    await _added(seeded, at=T0)
    relation = await _relation(seeded)
    assert relation.deleted_at == T0 + timedelta(minutes=5)
    assert await commands(seeded, CommandKind.SEND_WELCOME) == []


async def test_stale_delete_after_re_add_is_ignored(seeded: SessionFactory) -> None:
    await _added(seeded, at=T0 + timedelta(minutes=10))
    await _deleted(seeded, at=T0 + timedelta(minutes=5))
    assert (await _relation(seeded)).deleted_at is None
    assert await rows(seeded, AuditLog) == []


async def test_transfer_delete_and_replay(seeded: SessionFactory) -> None:
    await _added(seeded)
    await _deleted(seeded, at=T0 + timedelta(hours=1), source="DELETE_BY_TRANSFER")
    relation = await _relation(seeded)
    assert relation.deleted_by == "transfer" and relation.deleted_source == "DELETE_BY_TRANSFER"
    before = await dump(seeded)
    await _deleted(seeded, at=T0 + timedelta(hours=1), source="DELETE_BY_TRANSFER")
    assert await dump(seeded) == before
    [entry] = await rows(seeded, AuditLog)
    assert entry.action == "contact.deleted_by_transfer" and entry.subject_id == EXT


async def test_customer_deleting_staff_is_churn(seeded: SessionFactory) -> None:
    await _added(seeded)
    for _ in range(2):
        async with transaction(seeded) as s:
            await contacts.on_staff_deleted_by_contact(
                s, CORP, userid="zhangsan", external_userid=EXT, event_time=T0 + timedelta(days=3)
            )
    relation = await _relation(seeded)
    assert relation.deleted_by == "customer" and relation.deleted_at == T0 + timedelta(days=3)
    assert [e.action for e in await rows(seeded, AuditLog)] == ["contact.churned"]


async def test_transfer_failed_records_reason_once(seeded: SessionFactory) -> None:
    await _added(seeded)
    for _ in range(2):
        async with transaction(seeded) as s:
            await contacts.on_transfer_failed(
                s,
                CORP,
                userid="lisi",
                external_userid=EXT,
                fail_reason="customer_refused",
                event_time=T0 + timedelta(days=1),
            )
    assert (await _relation(seeded)).transfer_fail_reason == "customer_refused"
    [entry] = await rows(seeded, AuditLog)
    assert entry.action == "contact.transfer_failed"
    assert entry.detail is not None and entry.detail["takeover_userid"] == "lisi"


async def test_edited_enqueues_fetch(seeded: SessionFactory) -> None:
    async with transaction(seeded) as s:
        await contacts.on_contact_edited(s, CORP, userid="zhangsan", external_userid=EXT, event_time=T0)
    [fetch] = await commands(seeded, CommandKind.FETCH_CONTACT)
    assert fetch.payload == {"external_userid": EXT}


async def test_broken_default_template_skips_welcome_but_keeps_contact(seeded: SessionFactory, tmp_path: Path) -> None:
    (tmp_path / "welcome.yaml").write_text(WELCOME_ONLY_SOP, encoding="utf-8")
    (tmp_path / "welcome").mkdir()
    (tmp_path / "welcome" / "default.j2").write_text("{{ nope }}", encoding="utf-8")
    await _added(seeded, sop_dir=tmp_path)
    assert await commands(seeded, CommandKind.SEND_WELCOME) == []
    assert len(await rows(seeded, FollowRelation)) == 1
    [entry] = await rows(seeded, AuditLog)
    assert entry.action == "welcome.template_broken"


# ---- apply_contact_detail ---------------------------------------------------------------------------


def _detail(
    *, createtime: Any = T0, tags: Sequence[str] = ("t1", "t2"), remark: str = "王先生-看SUV"
) -> dict[str, Any]:
    return {
        "external_contact": {
            "external_userid": EXT,
            "name": "王先生",
            "avatar": "https://wework.qpic.cn/a.png",
            "type": 1,
            "gender": 1,
            "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdA",
        },
        "follow_user": [
            {
                "userid": "zhangsan",
                "remark": remark,
                "description": "周末到店",
                "createtime": int(createtime.timestamp()),
                "tags": [{"group_name": "意向", "tag_name": t, "tag_id": t, "type": 1} for t in tags]
                + [{"group_name": "", "tag_name": "个人", "tag_id": "personal1", "type": 2}],
                "remark_mobiles": ["13800000000"],
                "add_way": 1,
                "state": STATE,
            }
        ],
    }


async def _apply(factory: SessionFactory, data: dict[str, Any]) -> None:
    async with transaction(factory) as s:
        await contacts.apply_contact_detail(s, CORP, data)


async def test_detail_upserts_contact_relation_and_tags(seeded: SessionFactory) -> None:
    await _apply(seeded, _detail())
    [contact] = await rows(seeded, Contact)
    assert (contact.name, contact.gender, contact.unionid) == ("王先生", 1, "ozynqsulJFCZ2z1aYeS8h-nuasdA")
    assert contact.detail_synced_at is not None
    relation = await _relation(seeded)
    assert relation.remark == "王先生-看SUV" and relation.remark_mobiles == ["13800000000"]
    assert relation.added_at == T0 and relation.add_way == 1 and relation.channel == "qr"
    assert sorted(t.tag_id for t in await rows(seeded, ContactTag)) == ["t1", "t2"]
    before = await dump(seeded)
    await _apply(seeded, _detail())
    assert await dump(seeded) == before
    await _apply(seeded, _detail(tags=["t2", "t3"], remark="王先生"))
    assert sorted(t.tag_id for t in await rows(seeded, ContactTag)) == ["t2", "t3"]
    assert (await _relation(seeded)).remark == "王先生"


async def test_detail_does_not_resurrect_relation_deleted_after_fetch(seeded: SessionFactory) -> None:
    await _added(seeded)
    await _deleted(seeded, at=T0 + timedelta(minutes=1))
    await _apply(seeded, _detail(createtime=T0))
    relation = await _relation(seeded)
    assert relation.deleted_at == T0 + timedelta(minutes=1) and relation.remark == ""
    assert await rows(seeded, ContactTag) == []


async def test_detail_resurrects_when_customer_came_back_later(seeded: SessionFactory) -> None:
    await _added(seeded)
    await _deleted(seeded, at=T0 + timedelta(minutes=1))
    await _apply(seeded, _detail(createtime=T0 + timedelta(hours=2)))
    relation = await _relation(seeded)
    assert relation.deleted_at is None and relation.added_at == T0 + timedelta(hours=2)


async def test_batch_entry_shape_is_accepted(seeded: SessionFactory) -> None:
    data = {
        "external_contact": {"external_userid": EXT, "name": "王先生", "type": 1},
        "follow_info": {"userid": "lisi", "createtime": int(T0.timestamp()), "tag_id": ["t9"], "state": ""},
    }
    await _apply(seeded, data)
    assert (await _relation(seeded, "lisi")).added_at == T0
    assert [t.tag_id for t in await rows(seeded, ContactTag)] == ["t9"]
