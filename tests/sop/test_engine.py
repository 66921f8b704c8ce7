"""The engine on both databases with an injected clock: steps on time, once, within the policy."""

from __future__ import annotations

from datetime import timedelta

from scrm.contact_policy import Policy
from scrm.db import SessionFactory, write_transaction
from scrm.lifecycle import change_stage
from scrm.models import CommandStatus
from scrm.sop.catalog import CatalogHolder
from scrm.sop.services import SopServices
from scrm.sop.ticks import run_due, sweep_retired
from tests.sop.support import (
    CORP,
    MONDAY_10AM,
    add_contact,
    bundle,
    catalog,
    enrolments,
    installed,
    local,
    payload_text,
    run_until,
    seed,
    services,
    sop_commands,
    step_runs,
)

NURTURE = """
id: nurture
name: 新客培育
kind: contact
trigger: {event: contact.added}
steps:
  - id: welcome
    welcome: {text: "{{ contact.name or '您' }}好，我是{{ staff.name }}"}
  - id: day1
    after: 1d
    at: "10:00"
    private_message: {text: "第一天问候 {{ dealer.name }}"}
  - id: day3
    after: 3d
    at: "20:30"
    advisor_task: {text: "请邀约试驾"}
exit: {stage: [owner, lost], contact_deleted: true}
"""


async def test_welcome_is_a_regular_step_and_later_steps_wait(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    with installed(services(bundle(NURTURE))) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
    welcomes = await sop_commands(session_factory, "send_welcome")
    assert [payload_text(c) for c in welcomes] == ["您好，我是张三"]
    assert welcomes[0].deadline == MONDAY_10AM + timedelta(seconds=20)
    (enrolment,) = await enrolments(session_factory)
    assert (enrolment.next_step, enrolment.next_due_at) == (1, local("2026-03-03 10:00"))
    assert [r.step_id for r in await step_runs(session_factory)] == ["welcome"]


async def test_steps_fire_on_time_and_quiet_hours_move_them(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    svc = services(bundle(NURTURE))
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(days=6))
    runs = {r.step_id: r for r in await step_runs(session_factory)}
    assert runs["day1"].ran_at == local("2026-03-03 10:00")
    assert runs["day3"].due_at == local("2026-03-05 20:30")  # Thursday evening is quiet (21:00–09:00? no: 20:30)
    assert runs["day3"].ran_at == local("2026-03-05 20:30")
    messages = await sop_commands(session_factory, "add_msg_template")
    assert [payload_text(c) for c in messages] == ["第一天问候 北京示例4S店"]
    assert messages[0].payload["external_userid"] == ["wmA"] and messages[0].payload["sender"] == "zhangsan"
    cards = await sop_commands(session_factory, "send_app_message")
    assert cards[0].payload["textcard"]["description"].endswith("建议发送：请邀约试驾")
    (enrolment,) = await enrolments(session_factory)
    assert (enrolment.status, enrolment.end_reason) == ("completed", "all_steps")


async def test_a_step_due_in_quiet_hours_moves_to_the_next_allowed_minute(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    late = bundle(NURTURE.replace('at: "20:30"', 'at: "22:15"'))
    svc = services(late)
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(days=6))
    runs = {r.step_id: r for r in await step_runs(session_factory)}
    assert runs["day3"].due_at == local("2026-03-05 22:15")
    assert runs["day3"].ran_at == local("2026-03-06 09:00")


async def test_replayed_trigger_and_repeated_ticks_write_everything_once(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    svc = services(bundle(NURTURE))
    with installed(svc) as hooks:
        for _ in range(3):
            await add_contact(session_factory, "wmA", at=MONDAY_10AM, welcome_code="code-1", hooks=hooks)
        for _ in range(3):
            await run_due(session_factory, svc, local("2026-03-03 10:00"))
    assert len(await enrolments(session_factory)) == 1
    assert len(await sop_commands(session_factory, "send_welcome")) == 1
    assert len(await sop_commands(session_factory, "add_msg_template")) == 1
    assert len(await step_runs(session_factory)) == 2


async def test_exit_condition_cancels_pending_steps_at_once(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    svc = services(bundle(NURTURE))
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        async with write_transaction(session_factory) as session:
            await change_stage(session, CORP, "wmA", "owner", at=MONDAY_10AM + timedelta(hours=2), hooks=hooks)
        (enrolment,) = await enrolments(session_factory)
        assert (enrolment.status, enrolment.end_reason, enrolment.next_due_at) == ("exited", "stage:owner", None)
        await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(days=6))
    assert await sop_commands(session_factory, "add_msg_template") == []


PRIORITY = """
id: {id}
name: 并发 {id}
kind: contact
priority: {priority}
trigger: {{event: contact.added}}
steps:
  - after: 1d
    at: "10:00"
    private_message: {{text: "{id} 的消息"}}
"""


async def test_caps_let_the_higher_priority_send_win_and_defer_the_other(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    policy = Policy.model_validate({"caps": {"per_day": 1, "per_week": 5}})
    high = bundle(PRIORITY.format(id="high", priority=80))
    low = bundle(PRIORITY.format(id="low", priority=20))
    svc = services(low, high, policy=policy)
    with installed(svc) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(days=3))
    runs = {r.step_key.split(":")[1]: r for r in await step_runs(session_factory)}
    assert runs["high"].ran_at == local("2026-03-03 10:00")
    assert runs["low"].due_at == local("2026-03-03 10:00")
    assert runs["low"].ran_at == local("2026-03-04 09:00")  # next day, first allowed minute
    texts = [payload_text(c) for c in await sop_commands(session_factory, "add_msg_template")]
    assert texts == ["high 的消息", "low 的消息"]


async def test_in_flight_enrolments_keep_their_version(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    v1 = bundle(NURTURE)
    v2 = bundle(NURTURE.replace("第一天问候", "新版问候"))
    assert v1.version != v2.version
    with installed(services(v1)) as hooks:
        await add_contact(session_factory, "wmOld", at=MONDAY_10AM, hooks=hooks)
    svc2 = services(v2)
    with installed(svc2) as hooks:
        await add_contact(session_factory, "wmNew", at=MONDAY_10AM, hooks=hooks)
        await run_until(session_factory, svc2, MONDAY_10AM, MONDAY_10AM + timedelta(days=2))
    by_contact = {
        c.payload["external_userid"][0]: payload_text(c)
        for c in await sop_commands(session_factory, "add_msg_template")
    }
    assert by_contact == {"wmOld": "第一天问候 北京示例4S店", "wmNew": "新版问候 北京示例4S店"}
    versions = {e.subject_id: e.version for e in await enrolments(session_factory)}
    assert versions == {"wmOld": v1.version, "wmNew": v2.version}


async def test_disabled_or_deleted_template_ends_its_enrolments(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    nurture = bundle(NURTURE)
    with installed(services(nurture)) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
        await add_contact(session_factory, "wmB", at=MONDAY_10AM, hooks=hooks)
    disabled = bundle(NURTURE.replace("kind: contact", "kind: contact\nenabled: false"))
    svc = SopServices(holder=CatalogHolder.fixed(catalog(disabled, generation=2)))
    assert await sweep_retired(session_factory, svc, MONDAY_10AM + timedelta(hours=1)) == 2
    assert {(e.status, e.end_reason) for e in await enrolments(session_factory)} == {("cancelled", "template_disabled")}
    await run_until(session_factory, svc, MONDAY_10AM, MONDAY_10AM + timedelta(days=4))
    assert await sop_commands(session_factory, "add_msg_template") == []


async def test_a_catalog_that_never_loaded_cancels_nothing(session_factory: SessionFactory) -> None:
    await seed(session_factory)
    with installed(services(bundle(NURTURE))) as hooks:
        await add_contact(session_factory, "wmA", at=MONDAY_10AM, hooks=hooks)
    broken = SopServices(holder=CatalogHolder(__import__("pathlib").Path("/nonexistent-sop-folder")))
    assert await sweep_retired(session_factory, broken, MONDAY_10AM) == 0
    await run_due(session_factory, broken, local("2026-03-03 10:00"))  # runs on the stored version
    assert len(await sop_commands(session_factory, "add_msg_template")) == 1
    assert all(c.status == CommandStatus.PENDING.value for c in await sop_commands(session_factory, "add_msg_template"))
