"""Every trigger starts its templates once, for the right subject, with an injected clock."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from scrm.db import SessionFactory, write_transaction
from scrm.lifecycle import change_intent_level, change_stage
from scrm.models import Contact, CustomerGroup, Dealer, Tag, TagGroup
from scrm.sop.schedules import run_schedules, run_silence_scan
from scrm.sop.services import SopServices
from scrm.sop.triggers import message_received
from scrm.sync.contacts import sync_contact_tags
from scrm.sync.groups import on_group_updated
from tests.sop.support import (
    CORP,
    MONDAY_10AM,
    add_contact,
    bundle,
    enrolments,
    installed,
    local,
    payload_text,
    seed,
    services,
    sop_commands,
)


def _template(template_id: str, kind: str, trigger: str, action: str = "private_message", extra: str = "") -> str:
    return f"""
id: {template_id}
name: {template_id}
kind: {kind}
trigger: {trigger}
{extra}
steps:
  - immediately: true
    {action}: {{text: "{template_id}：{{{{ trigger.event }}}}"}}
"""


async def _group(factory: SessionFactory, chat_id: str, name: str, *, members: int = 10) -> None:
    async with write_transaction(factory) as session:
        dealer = (await session.exec(select(Dealer))).first()
        session.add(
            CustomerGroup(
                corp_id=CORP,
                chat_id=chat_id,
                name=name,
                owner_userid="zhangsan",
                member_count=members,
                dealer_id=dealer.id if dealer else None,
            )
        )


async def test_tagging_starts_tagged_templates_and_exits_others(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    tagged = bundle(_template("on_test_drive_tag", "contact", "{event: contact.tagged, tags: [意向/试驾]}"))
    nurture = bundle(
        _template(
            "nurture_until_tag", "contact", "{event: contact.added}", extra="exit: {tags_added: [已试驾]}"
        ).replace("immediately: true", "after: 2d")
    )
    svc = services(tagged, nurture)
    async with write_transaction(session_factory) as session:
        session.add(TagGroup(corp_id=CORP, group_id="g1", name="意向"))
        session.add(TagGroup(corp_id=CORP, group_id="g2", name="状态"))
        session.add(Tag(corp_id=CORP, tag_id="t_drive", group_id="g1", name="试驾"))
        session.add(Tag(corp_id=CORP, tag_id="t_done", group_id="g2", name="已试驾"))
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        for _ in range(2):  # a refetch seeing the same tags adds nothing
            async with write_transaction(session_factory) as session:
                await sync_contact_tags(
                    session, CORP, "wmA", "zhangsan", ["t_drive"], at=MONDAY_10AM + timedelta(hours=1), hooks=hooks
                )
        async with write_transaction(session_factory) as session:
            await sync_contact_tags(
                session,
                CORP,
                "wmA",
                "zhangsan",
                ["t_drive", "t_done"],
                at=MONDAY_10AM + timedelta(hours=2),
                hooks=hooks,
            )
    by_template = {e.template_id: e for e in await enrolments(session_factory)}
    assert by_template["on_test_drive_tag"].status == "completed"
    assert (by_template["nurture_until_tag"].status, by_template["nurture_until_tag"].end_reason) == (
        "exited",
        "tag:已试驾",
    )
    texts = [payload_text(c) for c in await sop_commands(session_factory, "add_msg_template")]
    assert texts == ["on_test_drive_tag：contact.tagged"]


async def test_stage_changes_start_owner_and_lost_templates(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    owner = bundle(_template("owner_care", "contact", "{event: contact.stage_changed, to: [owner]}"))
    lost = bundle(_template("lost_recall", "contact", "{event: lead.lost}"))
    svc = services(owner, lost)
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmOwner", at=MONDAY_10AM, hooks=hooks)
        await add_contact(session_factory, "wmLost", at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            await change_stage(session, CORP, "wmOwner", "intent", at=MONDAY_10AM + timedelta(hours=1), hooks=hooks)
            await change_stage(session, CORP, "wmOwner", "owner", at=MONDAY_10AM + timedelta(hours=2), hooks=hooks)
            await change_stage(session, CORP, "wmLost", "lost", at=MONDAY_10AM + timedelta(hours=2), hooks=hooks)
            assert not await change_stage(
                session, CORP, "wmLost", "lost", at=MONDAY_10AM + timedelta(hours=3), hooks=hooks
            )
    started = sorted((e.template_id, e.subject_id) for e in await enrolments(session_factory))
    assert started == [("lost_recall", "wmLost"), ("owner_care", "wmOwner")]


async def test_intent_level_triggers_when_the_level_is_reached_not_when_it_stays_hot(
    session_factory: SessionFactory,
) -> None:
    await seed(session_factory)
    hot = bundle(_template("hot_lead", "contact", "{event: contact.intent_level, level: A}"))
    with installed(services(hot)) as hooks:
        for ext in ("wmC", "wmB"):
            await add_contact(session_factory, ext, at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            at = MONDAY_10AM + timedelta(hours=1)
            await change_intent_level(session, CORP, "wmC", "C", at=at, score=20, hooks=hooks)
            await change_intent_level(session, CORP, "wmC", "A", at=at + timedelta(minutes=1), score=75, hooks=hooks)
            await change_intent_level(session, CORP, "wmC", "H", at=at + timedelta(minutes=2), score=92, hooks=hooks)
            await change_intent_level(session, CORP, "wmB", "B", at=at, score=50, hooks=hooks)
    started = [(e.template_id, e.subject_id, e.context["level"]) for e in await enrolments(session_factory)]
    assert started == [("hot_lead", "wmC", "A")]


async def test_member_joined_starts_a_group_template(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    welcome_group = bundle(_template("group_welcome", "group", "{event: group.member_joined}", "group_message"))
    await _group(session_factory, "wrCAR", "北京车友群")
    with installed(services(welcome_group)) as hooks:
        for _ in range(2):  # the callback replayed
            async with write_transaction(session_factory) as session:
                await on_group_updated(
                    session,
                    CORP,
                    chat_id="wrCAR",
                    update_detail="add_member",
                    event_time=MONDAY_10AM,
                    refetch_delay=0,
                    members=["wmNEW1"],
                    join_scene=3,
                    hooks=hooks,
                )
    (command,) = await sop_commands(session_factory, "add_msg_template")
    assert command.payload["chat_type"] == "group" and command.payload["chat_id_list"] == ["wrCAR"]
    assert command.payload["sender"] == "zhangsan"


async def test_keywords_answer_in_the_group_with_the_dealers_answer(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    price = bundle(
        """
id: group_keyword_price
name: 价格
kind: group
trigger: {event: message.keyword, keywords: [多少钱, 落地价], scope: group}
steps:
  - group_message: {text: "{{ dealer.answers.price | default('请私信顾问', true) }}"}
"""
    )
    single = bundle(_template("single_drive", "contact", "{event: message.keyword, regex: '试驾|试乘', scope: single}"))
    await _group(session_factory, "wrCAR", "北京车友群")
    async with write_transaction(session_factory) as session:
        dealer = (await session.exec(select(Dealer))).one()
        dealer.answers = {"price": "本月落地价 15.98 万起，详询顾问。"}
    svc = services(price, single)
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            at = MONDAY_10AM + timedelta(hours=3)
            kwargs = {"chat_type": "group", "chat_id": "wrCAR", "external_userid": "wmA", "userid": ""}
            assert await message_received(session, svc, CORP, msgid="m1", text="这车落地价多少钱", at=at, **kwargs) == 1
            assert await message_received(session, svc, CORP, msgid="m1", text="这车落地价多少钱", at=at, **kwargs) == 0
            assert await message_received(session, svc, CORP, msgid="m2", text="想约个试驾", at=at, **kwargs) == 0
            kwargs = {"chat_type": "single", "chat_id": "", "external_userid": "wmA", "userid": "zhangsan"}
            assert await message_received(session, svc, CORP, msgid="m3", text="想约个试驾", at=at, **kwargs) == 1
    commands = await sop_commands(session_factory, "add_msg_template")
    assert [(c.payload["chat_type"], payload_text(c)) for c in commands] == [
        ("group", "本月落地价 15.98 万起，详询顾问。"),
        ("single", "single_drive：message.keyword"),
    ]
    async with session_factory() as session:
        contact = (await session.exec(select(Contact).where(Contact.external_userid == "wmA"))).one()
    assert contact.last_active_at == MONDAY_10AM + timedelta(hours=3)


async def test_cron_enrols_matching_groups_once_per_fire(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    friday = bundle(
        _template("friday_post", "group", '{cron: "0 18 * * 5"}', "group_message", 'audience: {name: "*车友群*"}')
    )
    for chat_id, name in (("wr1", "北京车友群"), ("wr2", "上海车友群"), ("wr3", "内部员工群")):
        await _group(session_factory, chat_id, name)
    svc: SopServices = services(friday)
    fire = local("2026-03-06 18:00")  # a Friday
    assert await run_schedules(session_factory, svc, CORP, fire - timedelta(minutes=1)) == 0
    assert await run_schedules(session_factory, svc, CORP, fire + timedelta(minutes=3)) == 2
    assert await run_schedules(session_factory, svc, CORP, fire + timedelta(minutes=8)) == 0  # checkpointed
    assert sorted(e.subject_id for e in await enrolments(session_factory)) == ["wr1", "wr2"]
    assert {e.occurrence for e in await enrolments(session_factory)} == {"2026-03-06T18:00"}
    assert len(await sop_commands(session_factory, "add_msg_template")) == 2
    next_fire = local("2026-03-13 18:00")
    assert await run_schedules(session_factory, svc, CORP, next_fire + timedelta(seconds=5)) == 2


async def test_dates_enrol_every_live_contact_in_the_audience(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    festival = bundle(
        _template("festival", "contact", '{dates: ["2026-03-04"], at: "10:00"}', extra="audience: {stage: [prospect]}")
    )
    svc = services(festival)
    with installed(svc) as hooks:
        for ext in ("wm1", "wm2", "wm3"):
            await add_contact(session_factory, ext, at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            await change_stage(session, CORP, "wm3", "owner", at=MONDAY_10AM, hooks=hooks)
    assert await run_schedules(session_factory, svc, CORP, local("2026-03-04 10:01")) == 2
    assert await run_schedules(session_factory, svc, CORP, local("2026-03-04 10:02")) == 0
    assert sorted(e.subject_id for e in await enrolments(session_factory) if e.template_id == "festival") == [
        "wm1",
        "wm2",
    ]


async def test_silence_enrols_once_per_silent_spell(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    silent = bundle(_template("wake_up", "contact", "{event: contact.silent, days: 14}"))
    svc = services(silent)
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmQuiet", at=MONDAY_10AM, hooks=hooks)
        await add_contact(session_factory, "wmChatty", at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            kwargs = {"chat_type": "single", "chat_id": "", "userid": "zhangsan"}
            at = MONDAY_10AM + timedelta(days=10)
            await message_received(
                session, svc, CORP, msgid="x", text="你好", external_userid="wmChatty", at=at, **kwargs
            )
    day15 = MONDAY_10AM + timedelta(days=15)
    assert await run_silence_scan(session_factory, svc, CORP, day15) == 1
    assert await run_silence_scan(session_factory, svc, CORP, day15 + timedelta(hours=1)) == 0
    assert [e.subject_id for e in await enrolments(session_factory)] == ["wmQuiet"]
    async with write_transaction(session_factory) as session:  # the quiet one speaks, then goes silent again
        kwargs = {"chat_type": "single", "chat_id": "", "userid": "zhangsan"}
        at = day15 + timedelta(days=1)
        await message_received(session, svc, CORP, msgid="y", text="在吗", external_userid="wmQuiet", at=at, **kwargs)
    later = day15 + timedelta(days=16)
    assert await run_silence_scan(session_factory, svc, CORP, later) == 2  # wmQuiet's second spell, wmChatty
    assert sorted(e.subject_id for e in await enrolments(session_factory)) == ["wmChatty", "wmQuiet", "wmQuiet"]
