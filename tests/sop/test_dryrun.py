"""The dry run on both databases: who enters, when steps fire, messages per day, cap and quota conflicts."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

from sqlmodel import select

from scrm.contact_policy import Policy
from scrm.db import SessionFactory, write_transaction
from scrm.models import Contact, CustomerGroup, FollowRelation, SopEnrolment
from scrm.sop.dryrun import DryRunReport, dry_run
from scrm.sop.spec import TemplateBundle
from scrm.touches import record_touch
from tests.sop.support import CORP, MONDAY_10AM, add_contact, bundle, local, seed

NURTURE = """
id: nurture
name: 新客培育
kind: contact
trigger: {event: contact.added}
steps:
  - id: hello
    private_message: {text: "{{ contact.name }}您好，我是{{ staff.name }}"}
  - id: night
    after: 1d
    at: "22:00"
    private_message: {text: "晚上好"}
  - id: referral
    after: 2d
    when: contact.channel == "referral"
    private_message: {text: "推荐礼"}
  - id: tag
    after: 2d
    add_tags: [培育完成]
exit: {stage: [owner]}
"""

FRIDAY = """
id: friday
name: 周五推送
kind: group
trigger: {cron: "0 10,16 * * 5"}
audience: {name: "*车友群*", members: {min: 3}}
steps:
  - id: post
    immediately: true
    group_message: {text: "{{ group.name }} 周末愉快"}
"""

WAKEUP = """
id: wakeup
name: 沉默唤醒
kind: contact
trigger: {event: contact.silent, days: 14}
steps:
  - id: nudge
    at: "11:00"
    private_message: {text: "好久不见，{{ contact.name }}"}
"""


# ---- seeding (also used by test_cli_render) -----------------------------------------------------------------


async def update_contact(
    factory: SessionFactory,
    external_userid: str,
    *,
    stage: str | None = None,
    last_active_at: datetime | None = None,
    relation_deleted_at: datetime | None = None,
) -> None:
    async with write_transaction(factory) as session:
        contact = (await session.exec(select(Contact).where(Contact.external_userid == external_userid))).one()
        if stage is not None:
            contact.stage = stage
        if last_active_at is not None:
            contact.last_active_at = last_active_at
        if relation_deleted_at is not None:
            query = select(FollowRelation).where(FollowRelation.external_userid == external_userid)
            for relation in (await session.exec(query)).all():
                relation.deleted_at = relation_deleted_at


async def add_group(
    factory: SessionFactory, chat_id: str, name: str, members: int, *, status: str = "active", owner: str = "zhangsan"
) -> None:
    async with write_transaction(factory) as session:
        session.add(
            CustomerGroup(
                corp_id=CORP, chat_id=chat_id, name=name, owner_userid=owner, member_count=members, status=status
            )
        )


async def add_touches(factory: SessionFactory, external_userid: str, *moments: datetime) -> None:
    async with write_transaction(factory) as session:
        for index, moment in enumerate(moments):
            await record_touch(
                session,
                CORP,
                "contact",
                external_userid,
                kind="private_message",
                source="campaign",
                ref=f"campaign:{external_userid}:{index}",
                at=moment,
                counts_quota=True,
            )


async def run(
    factory: SessionFactory, template: TemplateBundle, policy: Policy, *, start: datetime, days: int = 14
) -> DryRunReport:
    async with factory() as session:
        return await dry_run(session, template, policy, corp_id=CORP, start=start, days=days)


def planned(report: DryRunReport, subject_id: str) -> dict[str, tuple[datetime, str, str, tuple[str, ...]]]:
    return {s.step_id: (s.at, s.outcome, s.reason, s.deferred) for s in report.steps if s.subject_id == subject_id}


# ---- tests --------------------------------------------------------------------------------------------------


async def test_event_template_enrols_the_current_audience_now(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    for external_userid in ("wmA", "wmB", "wmC"):
        await add_contact(session_factory, external_userid, at=MONDAY_10AM - timedelta(days=30), name="王先生")
    await update_contact(session_factory, "wmB", stage="owner")  # meets the exit condition: leaves at once
    await update_contact(session_factory, "wmC", relation_deleted_at=MONDAY_10AM - timedelta(days=1))

    report = await run(session_factory, bundle(NURTURE), Policy(), start=MONDAY_10AM)

    assert [(e.subject_id, e.enrolled_at) for e in report.entries] == [("wmA", MONDAY_10AM)]
    assert report.excluded == Counter({"stage:owner": 1})
    assert planned(report, "wmA") == {
        "hello": (MONDAY_10AM, "sent", "ok", ()),
        "night": (local("2026-03-04 09:00"), "sent", "ok", ("quiet_hours",)),  # due Tue 22:00: quiet
        "referral": (local("2026-03-04 10:00"), "skipped", "when_false", ()),
        "tag": (local("2026-03-04 10:00"), "done", "ok", ()),
    }
    night = next(s for s in report.steps if s.step_id == "night")
    assert night.due_at == local("2026-03-03 22:00")
    per_day = report.per_day()
    assert len(per_day) == 15  # 10:00 to 10:00: the first and the last day are partly in the window
    assert per_day[date(2026, 3, 2)]["private_message"] == 1
    assert per_day[date(2026, 3, 3)]["private_message"] == 0
    assert per_day[date(2026, 3, 4)]["private_message"] == 1
    assert report.conflicts == [] and report.later == 0


async def test_existing_touches_count_towards_caps(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    await add_contact(session_factory, "wmA", at=MONDAY_10AM - timedelta(days=30))
    await add_touches(session_factory, "wmA", local("2026-03-02 09:10"), local("2026-03-02 09:20"))

    report = await run(session_factory, bundle(NURTURE), Policy(), start=MONDAY_10AM)

    steps = planned(report, "wmA")
    assert steps["hello"] == (local("2026-03-03 09:00"), "sent", "ok", ("cap_day",))
    assert [(c.subject_id, c.day, c.reason, c.used, c.limit, c.step_id) for c in report.conflicts] == [
        ("wmA", date(2026, 3, 2), "cap_day", 2, 2, "hello")
    ]
    skipping = Policy.model_validate({"on_limit": "skip"})
    report = await run(session_factory, bundle(NURTURE), skipping, start=MONDAY_10AM)
    assert planned(report, "wmA")["hello"] == (MONDAY_10AM, "skipped", "cap_day", ())
    assert report.to_json()["steps"][0]["reason"] == "cap_day"


async def test_cron_fires_times_audience_and_the_group_send_quota(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    await add_group(session_factory, "wrA", "望京车友群", 10)
    await add_group(session_factory, "wrSmall", "车友群小", 2)  # below members.min
    await add_group(session_factory, "wrGone", "车友群旧", 50, status="dismissed")
    await add_group(session_factory, "wrOther", "售后服务群", 80)  # name does not match
    one_a_day = Policy.model_validate({"group_send_quota": {"mode": "1_per_day"}})

    report = await run(session_factory, bundle(FRIDAY), one_a_day, start=MONDAY_10AM)

    assert [(e.subject_id, e.occurrence) for e in report.entries] == [
        ("wrA", "2026-03-06T10:00"),
        ("wrA", "2026-03-06T16:00"),
        ("wrA", "2026-03-13T10:00"),
        ("wrA", "2026-03-13T16:00"),
    ]
    sends = [(s.at, s.deferred) for s in report.steps]
    assert sends == [
        (local("2026-03-06 10:00"), ()),
        (local("2026-03-07 09:00"), ("quota",)),  # the 16:00 fire: quota used until midnight, then quiet hours
        (local("2026-03-13 10:00"), ()),
        (local("2026-03-14 09:00"), ("quota",)),
    ]
    assert [(c.day, c.reason, c.used, c.limit) for c in report.conflicts] == [
        (date(2026, 3, 6), "quota", 1, 1),
        (date(2026, 3, 13), "quota", 1, 1),
    ]
    totals = {day: counts["group_message"] for day, counts in report.per_day().items() if counts}
    assert totals == {date(2026, 3, 6): 1, date(2026, 3, 7): 1, date(2026, 3, 13): 1, date(2026, 3, 14): 1}


async def test_silent_contacts_enter_when_their_silence_reaches_the_days(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    long_ago = MONDAY_10AM - timedelta(days=60)
    for external_userid in ("wmOld", "wmSoon", "wmRecent", "wmServed"):
        await add_contact(session_factory, external_userid, at=long_ago, name=external_userid)
    await update_contact(session_factory, "wmOld", last_active_at=MONDAY_10AM - timedelta(days=20))
    await update_contact(session_factory, "wmSoon", last_active_at=MONDAY_10AM - timedelta(days=10))
    await update_contact(session_factory, "wmRecent", last_active_at=MONDAY_10AM - timedelta(days=1))
    await update_contact(session_factory, "wmServed", last_active_at=MONDAY_10AM - timedelta(days=30))
    template = bundle(WAKEUP)
    async with write_transaction(session_factory) as session:  # this spell was already served
        session.add(
            SopEnrolment(
                corp_id=CORP, template_id="wakeup", version=template.version, subject_type="contact",
                subject_id="wmServed", status="completed", enrolled_at=MONDAY_10AM - timedelta(days=15),
            )
        )  # fmt: skip

    report = await run(session_factory, template, Policy(), start=MONDAY_10AM, days=7)

    assert [(e.subject_id, e.enrolled_at) for e in report.entries] == [
        ("wmOld", MONDAY_10AM),
        ("wmSoon", MONDAY_10AM + timedelta(days=4)),
    ]
    assert planned(report, "wmOld")["nudge"][0] == local("2026-03-02 11:00")
    assert planned(report, "wmSoon")["nudge"][0] == local("2026-03-06 11:00")
    assert report.entries[0].occurrence == "silent:2026-02-10"


async def test_render_failures_and_missing_relations_are_skips(session_factory: SessionFactory) -> None:
    broken = NURTURE.replace('text: "晚上好"', 'text: "{{ dealer.answers.price }}"')
    await seed(session_factory)
    await add_contact(session_factory, "wmA", at=MONDAY_10AM - timedelta(days=3))

    report = await run(session_factory, bundle(broken), Policy(), start=MONDAY_10AM, days=2)

    steps = planned(report, "wmA")
    assert steps["night"][1:3] == ("skipped", "render_error")
    assert "referral" not in steps and report.later == 2  # falls due after the 2-day window


async def test_steps_wait_for_the_one_above_them(session_factory: SessionFactory) -> None:
    capped = Policy.model_validate({"caps": {"per_day": 1, "per_week": 5}})
    template = bundle(NURTURE.replace('after: 1d\n    at: "22:00"', 'after: 1h\n    at: "11:00"'))
    await seed(session_factory)
    await add_contact(session_factory, "wmA", at=MONDAY_10AM - timedelta(days=3))

    report = await run(session_factory, template, capped, start=MONDAY_10AM, days=3)

    steps = planned(report, "wmA")
    assert steps["hello"][0] == MONDAY_10AM
    assert steps["night"] == (local("2026-03-03 09:00"), "sent", "ok", ("cap_day",))
    assert steps["tag"][0] == local("2026-03-04 10:00")
    assert report.to_json()["per_day"][1] == {
        "date": "2026-03-03",
        "welcome": 0,
        "private_message": 1,
        "advisor_task": 0,
        "group_message": 0,
        "total": 1,
    }
