"""Each step action writes what it should (and a skip says why), on both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from scrm.db import SessionFactory, write_transaction
from scrm.models import Contact, ContactTag, Tag, TagGroup
from scrm.sync.contacts import on_staff_deleted_by_contact
from tests.sop.support import (
    CORP,
    MONDAY_10AM,
    add_contact,
    bundle,
    enrolments,
    installed,
    payload_text,
    run_until,
    seed,
    services,
    sop_commands,
    step_runs,
)

ACTIONS = """
id: actions
name: 动作
kind: contact
trigger: {event: contact.added}
steps:
  - id: tag
    add_tags: [意向/试驾]
    remove_tags: [新客]
  - id: card
    advisor_task: {title: "跟进 {{ contact.name or '客户' }}", text: "邀请{{ contact.name or '客户' }}周末试驾"}
  - id: notify
    notify_staff: {to: [owner, manager01], text: "{{ staff.name }}，客户已进入培育"}
  - id: skipped
    when: "contact.stage == 'owner'"
    private_message: {text: "只给车主"}
  - id: chain
    start_sop: second
  - id: stop
    end: true
  - id: never
    private_message: {text: "不会发送"}
"""
SECOND = """
id: second
name: 第二个
kind: contact
trigger: {event: contact.stage_changed, to: [intent]}
steps:
  - private_message: {text: "来自第二个 SOP"}
"""


async def _tags(factory: SessionFactory) -> None:
    async with write_transaction(factory) as session:
        session.add(TagGroup(corp_id=CORP, group_id="g1", name="意向"))
        session.add(Tag(corp_id=CORP, tag_id="t_drive", group_id="g1", name="试驾"))
        session.add(Tag(corp_id=CORP, tag_id="t_new", group_id="g1", name="新客"))


async def test_every_action_writes_its_command(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    await _tags(session_factory)
    async with write_transaction(session_factory) as session:
        session.add(ContactTag(corp_id=CORP, external_userid="wmA", userid="zhangsan", tag_id="t_new"))
        session.add(Contact(corp_id=CORP, external_userid="wmA", name="王先生"))  # known before: a re-add
    with installed(services(bundle(ACTIONS), bundle(SECOND))) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
    (mark,) = await sop_commands(session_factory, "mark_tag")
    assert (mark.payload["add_tag"], mark.payload["remove_tag"]) == (["t_drive"], ["t_new"])
    async with session_factory() as session:
        tags = (await session.exec(select(ContactTag.tag_id).where(ContactTag.external_userid == "wmA"))).all()
    assert list(tags) == ["t_drive"]  # mirrored at once: WeCom sends no callback for our own mark_tag
    card, *notes = await sop_commands(session_factory, "send_app_message")
    assert card.payload["textcard"]["title"] == "跟进 王先生"
    assert card.payload["textcard"]["description"] == "客户：王先生\n建议发送：邀请王先生周末试驾"
    assert sorted(n.payload["touser"] for n in notes) == ["manager01", "zhangsan"]
    assert {n.payload["text"]["content"] for n in notes} == {"张三，客户已进入培育"}
    runs = {
        r.step_id: (r.outcome, r.reason)
        for r in await step_runs(session_factory)
        if r.step_key.startswith("sop:actions")
    }
    assert runs == {
        "tag": ("sent", ""),
        "card": ("sent", ""),
        "notify": ("sent", ""),
        "skipped": ("skipped", "when_false"),
        "chain": ("done", ""),
        "stop": ("done", ""),
    }
    by_template = {e.template_id: e for e in await enrolments(session_factory)}
    assert (by_template["actions"].status, by_template["actions"].end_reason) == ("completed", "end_step")
    assert by_template["second"].occurrence == "from:actions"
    assert [payload_text(c) for c in await sop_commands(session_factory, "add_msg_template")] == ["来自第二个 SOP"]


BROKEN_AT_RUNTIME = """
id: fragile
name: 运行时出错
kind: contact
trigger: {event: contact.added}
steps:
  - after: 1h
    private_message: {text: "{{ dealer.answers.price.upper() }}"}
  - after: 2h
    private_message: {text: "第二步照常"}
"""


async def test_a_message_that_fails_at_run_time_is_skipped_with_its_reason(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    svc = services(bundle(BROKEN_AT_RUNTIME))
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(hours=3))
    assert [(r.outcome, r.reason) for r in await step_runs(session_factory)] == [
        ("skipped", "render_error"),
        ("sent", ""),
    ]
    assert [payload_text(c) for c in await sop_commands(session_factory, "add_msg_template")] == ["第二步照常"]


LATER = """
id: later
name: 之后
kind: contact
trigger: {event: contact.added}
steps:
  - after: 1d
    private_message: {text: "明天见"}
"""


async def test_no_message_once_the_customer_deleted_the_staff_member(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    svc = services(bundle(LATER))
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            await on_staff_deleted_by_contact(
                session,
                CORP,
                userid="zhangsan",
                external_userid="wmA",
                event_time=MONDAY_10AM + timedelta(hours=1),
                hooks=hooks,
            )
        await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(days=2))
    assert [(r.outcome, r.reason) for r in await step_runs(session_factory)] == [("skipped", "no_relation")]
    assert await sop_commands(session_factory, "add_msg_template") == []
