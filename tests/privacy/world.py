"""One customer with a row in every table that can hold something about them (and a bystander who must keep
theirs), the strings that identify them, and full database dumps to search for those strings."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import make_url
from sqlmodel import SQLModel, func, select

from scrm.db import SessionFactory, transaction
from scrm.db_types import utcnow
from scrm.models import (
    AuditLog,
    Campaign,
    CampaignRun,
    CampaignTarget,
    Contact,
    ContactTag,
    ContactTouch,
    Corp,
    CustomerGroup,
    CustomerTransfer,
    DeadLetter,
    FollowRelation,
    GroupMember,
    InboxEvent,
    IntentSignal,
    Lead,
    LeadEvent,
    LeadScoreChange,
    Message,
    OutboxCommand,
    SopEnrolment,
    SopStepRun,
    StaffNotification,
    User,
    UserRole,
    metadata,
)
from tests.conftest import PG_HOST, PG_USER

CORP = "wwprivacycorp0001"
EU = "wm_privacy_subject_0001"
OTHER = "wm_privacy_bystander_02"
NAME = "欧阳娜娜测"
NICKNAME = "娜娜同学"
PHONE = "13812345678"
REMARK_PHONE = "13987654321"
REMARK = "欧阳女士望京"
DESCRIPTION = "孩子在上学周末才有空"
CORP_NAME = "蓝鲸科技有限公司"
UNIONID = "o6_unionid_secret_4242"
AVATAR = "http://wx.qlogo.cn/avatar/secret4242"
TEXTS = (f"我的电话是{PHONE}，想周六去试驾L7", "家住朝阳区望京花园七号楼", "首付能不能再低一点")
OTHER_NAME = "路人甲乙丙"
OTHER_TEXT = "旁观者也想了解一下价格"
ADMIN, OPERATOR = "privacy_admin", "privacy_operator"

# everything that identifies or quotes the customer: none may survive an erasure anywhere in the database
SECRETS = (EU, NAME, NICKNAME, PHONE, REMARK_PHONE, REMARK, DESCRIPTION, CORP_NAME, UNIONID, AVATAR, *TEXTS)


def needles(value: str) -> list[str]:
    """The string as stored in a text column and inside JSON (escaped)."""
    return sorted({value, json.dumps(value)[1:-1]})


@dataclass
class Seeded:
    """The ids of the customer's rows, table by table."""

    ids: dict[str, set[int]] = field(default_factory=dict)

    def add(self, row: SQLModel) -> None:
        table = str(row.__tablename__)
        row_id = getattr(row, "id")  # noqa: B009 (every table of the world has an integer id)
        assert isinstance(row_id, int)
        self.ids.setdefault(table, set()).add(row_id)


async def _add(session: Any, rows: list[SQLModel]) -> None:
    for row in rows:
        session.add(row)
    await session.flush()


async def seed_users(factory: SessionFactory) -> None:
    async with transaction(factory) as session:
        session.add(User(username=ADMIN, role=UserRole.ADMIN.value, display_name="管理员"))
        session.add(User(username=OPERATOR, role=UserRole.OPERATOR.value, display_name="运营"))


async def seed_world(factory: SessionFactory) -> Seeded:
    """The customer everywhere, and the bystander beside them."""
    seeded = Seeded()
    now = utcnow()
    async with transaction(factory) as session:
        session.add(Corp(corp_id=CORP, name="涟漪汽车"))
        await session.flush()
        await _people(session, seeded, now)
        lead = await _lead(session, seeded, now)
        await _sop_and_campaign(session, seeded, now)
        await _plumbing(session, seeded, lead, now)
    return seeded


async def _people(session: Any, seeded: Seeded, now: Any) -> None:
    contact = Contact(corp_id=CORP, external_userid=EU, name=NAME, avatar=AVATAR, unionid=UNIONID, corp_name=CORP_NAME)
    contact.city, contact.stage = "北京", "intent"
    relation = FollowRelation(corp_id=CORP, external_userid=EU, userid="adv01", remark=REMARK, description=DESCRIPTION)
    relation.remark_mobiles, relation.state, relation.added_at = [REMARK_PHONE], "qr.d=LD01", now - timedelta(days=9)
    tag = ContactTag(corp_id=CORP, external_userid=EU, userid="adv01", tag_id="et_test_drive")
    group = CustomerGroup(corp_id=CORP, chat_id="wr_privacy_group", name="望京试驾群", owner_userid="adv01")
    member = GroupMember(corp_id=CORP, chat_id="wr_privacy_group", member_id=EU, name=NAME, group_nickname=NICKNAME)
    member.unionid = UNIONID
    messages = [
        Message(corp_id=CORP, source="archive", msgid=f"m{n}", external_userid=EU, userid="adv01", text=text)
        for n, text in enumerate(TEXTS)
    ]
    messages[0].payload = {"content": TEXTS[0], "from": EU}
    signal = IntentSignal(corp_id=CORP, external_userid=EU, kind="message", code="test_drive", ref="msg:archive:m0")
    signal.detail = {"text": TEXTS[0][:8]}
    form = IntentSignal(corp_id=CORP, external_userid=EU, kind="form", code="form", ref=f"form:{EU}:1")
    form.detail = {"phone": PHONE, "name": NAME}
    score = LeadScoreChange(corp_id=CORP, external_userid=EU, score_after=86, level_after="H")
    score.reasons = [{"ref": "msg:archive:m0", "rule": "td", "code": "test_drive", "points": 18.0}]
    rows: list[SQLModel] = [contact, relation, tag, member, *messages, signal, form, score]
    await _add(session, [group, *rows])
    for row in rows:
        seeded.add(row)
    bystander = Contact(corp_id=CORP, external_userid=OTHER, name=OTHER_NAME)
    said = Message(corp_id=CORP, source="archive", msgid="other-1", external_userid=OTHER, text=OTHER_TEXT)
    await _add(session, [bystander, said])


async def _lead(session: Any, seeded: Seeded, now: Any) -> Lead:
    lead = Lead(corp_id=CORP, external_userid=EU, status="assigned", advisor_userid="adv01", score=86, level="H")
    lead.asked, lead.lost_note = f"{TEXTS[0]} / {TEXTS[2]}", f"{NAME}说再考虑"
    lead.reasons = [{"ref": "msg:archive:m0", "code": "test_drive", "points": 18.0}]
    await _add(session, [lead])
    assert lead.id is not None
    event = LeadEvent(corp_id=CORP, lead_id=lead.id, kind="assigned", detail={"note": f"客户说{TEXTS[1]}"})
    title = f"新线索：{NAME}（H 级，86 分）"
    note = StaffNotification(
        corp_id=CORP, userid="adv01", key=f"new_lead:{lead.id}:1:adv01", kind="new_lead", title=title
    )
    note.lead_id, note.description = lead.id, f"问：{TEXTS[2]}"
    note.batch_key, note.status = "notify:adv01:card:1", "sent"
    reminder = StaffNotification(
        corp_id=CORP, userid="adv01", key=f"remind:{lead.id}:1:adv01", kind="remind", title=title
    )
    reminder.lead_id = lead.id  # still pending: never sent
    transfer = CustomerTransfer(
        corp_id=CORP,
        external_userid=EU,
        handover_userid="brand01",
        takeover_userid="adv01",
        command_key=f"transfer:{EU}:1",
    )
    transfer.lead_id, transfer.status, transfer.next_poll_at = lead.id, "waiting", now + timedelta(hours=1)
    audit_lead = AuditLog(corp_id=CORP, action="lead.accepted", subject_type="lead", subject_id=str(lead.id))
    audit_lead.detail = {"note": f"已电话联系 {PHONE}"}
    audit_contact = AuditLog(corp_id=CORP, action="contact.churned", subject_type="contact", subject_id=EU)
    audit_contact.detail = {"userid": "adv01"}
    rows: list[SQLModel] = [event, note, reminder, transfer, audit_lead, audit_contact]
    await _add(session, rows)
    for row in [lead, *rows]:
        seeded.add(row)
    return lead


async def _sop_and_campaign(session: Any, seeded: Seeded, now: Any) -> None:
    enrolment = SopEnrolment(corp_id=CORP, template_id="nurture", version="v1", subject_type="contact", subject_id=EU)
    enrolment.context, enrolment.next_due_at = {"event": "keyword", "text": TEXTS[1]}, now + timedelta(days=1)
    await _add(session, [enrolment])
    assert enrolment.id is not None
    key = f"sop:nurture:{EU}::hello"
    step = SopStepRun(
        corp_id=CORP, enrolment_id=enrolment.id, step_key=key, step_id="hello", action="private_message", outcome="sent"
    )
    step.commands = [key]
    touch = ContactTouch(
        corp_id=CORP, recipient_type="contact", recipient_id=EU, kind="private_message", source="sop", ref=key
    )
    campaign = Campaign(
        corp_id=CORP, code="spring", chat_type="single", spec_hash="x", schedule_kind="now", status="done"
    )
    await _add(session, [step, touch, campaign])
    assert campaign.id is not None
    run = CampaignRun(campaign_id=campaign.id, corp_id=CORP, slot="now", fire_at=now, status="tracking")
    await _add(session, [run])
    assert run.id is not None
    target = CampaignTarget(run_id=run.id, corp_id=CORP, target_type="contact", target_id=EU, name=NAME, status="sent")
    await _add(session, [target])
    for row in (enrolment, step, touch, target):
        seeded.add(row)


def _command(kind: str, key: str, payload: dict[str, Any], status: str = "pending") -> OutboxCommand:
    return OutboxCommand(corp_id=CORP, kind=kind, idempotency_key=key, payload=payload, status=status)


async def _plumbing(session: Any, seeded: Seeded, lead: Lead, now: Any) -> None:
    welcome = _command("send_welcome", "welcome:wc-privacy-1", {"external_userid": EU, "text": f"{NAME}您好"})
    batch = _command(
        "add_msg_template",
        "campaign:spring:now:1",
        {"chat_type": "single", "sender": "adv01", "external_userid": [EU, OTHER], "text": {"content": "春季试驾"}},
    )
    card = {"title": f"新线索：{NAME}", "description": f"问：{TEXTS[2]}", "url": f"https://x/leads/{lead.id}"}
    notified = _command("send_app_message", "notify:adv01:card:1", {"touser": "adv01", "textcard": card}, "done")
    fetched = _command("fetch_contact", f"fetch_contact:{EU}:1700000000", {"external_userid": EU}, "done")
    fetched.result = {"name": NAME, "remark_mobiles": [REMARK_PHONE]}
    add_event = {"ExternalUserID": EU, "UserID": "adv01", "ChangeType": "add_external_contact", "State": "qr"}
    pending = InboxEvent(
        corp_id=CORP,
        dedup_key=f"add:{EU}:adv01:1",
        ordering_key=f"contact:{EU}",
        event_type="change_external_contact.add_external_contact",
        payload=add_event,
    )
    done = InboxEvent(
        corp_id=CORP, dedup_key="msg:1", ordering_key="app:adv01", event_type="text", payload={"Content": TEXTS[1]}
    )
    done.payload["About"], done.status = EU, "done"
    letter = DeadLetter(corp_id=CORP, source="inbox", ref=f"edit:{EU}:1", event_type="edit_external_contact")
    letter.ordering_key, letter.payload = f"contact:{EU}", {"ExternalUserID": EU, "Remark": REMARK}
    rows: list[SQLModel] = [welcome, batch, notified, fetched, pending, done, letter]
    await _add(session, rows)
    for row in rows:
        seeded.add(row)


async def row_counts(factory: SessionFactory) -> dict[str, int]:
    """Rows per table, every table of the metadata."""
    counts: dict[str, int] = {}
    async with factory() as session:
        for table in metadata.sorted_tables:
            counts[table.name] = (await session.exec(select(func.count()).select_from(table))).one()
    return counts


def _sqlite_dump(path: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


async def database_dump(url: str) -> str:
    """The whole database as SQL text: sqlite3's iterdump, or pg_dump of the test database."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        assert parsed.database
        return await asyncio.to_thread(_sqlite_dump, parsed.database)
    proc = await asyncio.create_subprocess_exec(
        "pg_dump", "-h", PG_HOST, "-U", PG_USER, "-d", str(parsed.database), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


def leaked(dump: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """The secrets found in ``dump`` (literally or JSON-escaped)."""
    return [s for s in secrets if any(n in dump for n in needles(s))]
