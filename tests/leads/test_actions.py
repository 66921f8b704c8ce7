"""Lead lifecycle actions on both databases: every transition allowed and refused, permissions, harmless repeats,
the lost-lead approval (contact stage, the 战败召回 SOP) and its rejection, first contact seen from messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from sqlmodel import select

from scrm.contact_policy import Policy
from scrm.db import SessionFactory, write_transaction
from scrm.intent.pipeline import on_message_stored
from scrm.leads.actions import ActionInput, ActionOutcome, LeadActionError, on_staff_message, perform
from scrm.leads.transitions import Action
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import LeadStatus, Message, SopEnrolment
from scrm.sop.catalog import Catalog, CatalogHolder
from scrm.sop.services import SopServices
from scrm.sop.spec import SopTemplate, TemplateBundle
from tests.domain_support import intent_for, process_services
from tests.leads.action_support import (
    CORP,
    T0,
    add_lead,
    contact_stage,
    events,
    get_lead,
    lead_services,
    notifications,
    seed_network,
)
from tests.sop.support import installed

S = LeadStatus
ADVISOR_ACTIONS = [
    Action.ACCEPT,
    Action.CONTACTED,
    Action.BOOK_TEST_DRIVE,
    Action.TEST_DRIVE_DONE,
    Action.TEST_DRIVE_NO_SHOW,
    Action.ORDERED,
    Action.DELIVERED,
    Action.REQUEST_LOST,
]
# written from the lifecycle in issue 5, independently of scrm.leads.transitions
ALLOWED: dict[str, set[Action]] = {
    S.ASSIGNED: {Action.ACCEPT, Action.CONTACTED, Action.REQUEST_LOST},
    S.ACCEPTED: {Action.CONTACTED, Action.BOOK_TEST_DRIVE, Action.ORDERED, Action.REQUEST_LOST},
    S.CONTACTED: {Action.BOOK_TEST_DRIVE, Action.ORDERED, Action.REQUEST_LOST},
    S.TEST_DRIVE_BOOKED: {Action.TEST_DRIVE_DONE, Action.TEST_DRIVE_NO_SHOW, Action.ORDERED, Action.REQUEST_LOST},
    S.TEST_DRIVE_DONE: {Action.ORDERED, Action.REQUEST_LOST},
    S.TEST_DRIVE_NO_SHOW: {Action.BOOK_TEST_DRIVE, Action.ORDERED, Action.REQUEST_LOST},
    S.ORDERED: {Action.DELIVERED, Action.REQUEST_LOST},
    S.DELIVERED: set(),
    S.LOST_PENDING: set(),
    S.LOST: set(),
}
TARGET: dict[Action, str] = {
    Action.ACCEPT: S.ACCEPTED,
    Action.CONTACTED: S.CONTACTED,
    Action.BOOK_TEST_DRIVE: S.TEST_DRIVE_BOOKED,
    Action.TEST_DRIVE_DONE: S.TEST_DRIVE_DONE,
    Action.TEST_DRIVE_NO_SHOW: S.TEST_DRIVE_NO_SHOW,
    Action.ORDERED: S.ORDERED,
    Action.DELIVERED: S.DELIVERED,
    Action.REQUEST_LOST: S.LOST_PENDING,
}


async def act(
    factory: SessionFactory,
    lead_id: int,
    action: Action,
    actor: str,
    minutes: float = 1,
    reason: str = "",
    note: str = "",
    advisor_userid: str | None = None,
    hooks: LifecycleHooks = NO_HOOKS,
) -> ActionOutcome:
    async with write_transaction(factory) as session:
        return await perform(
            session,
            lead_services(hooks),
            CORP,
            lead_id,
            action,
            actor=actor,
            now=T0 + timedelta(minutes=minutes),
            given=ActionInput(reason=reason, note=note, advisor_userid=advisor_userid),
        )


async def refused(
    factory: SessionFactory,
    lead_id: int,
    action: Action,
    actor: str,
    reason: str = "",
    note: str = "",
    advisor_userid: str | None = None,
) -> LeadActionError:
    with pytest.raises(LeadActionError) as caught:
        await act(factory, lead_id, action, actor, reason=reason, note=note, advisor_userid=advisor_userid)
    return caught.value


async def test_the_whole_lifecycle_with_timestamps_sla_history_and_owner_stage(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj)
    await act(session_factory, lead_id, Action.ACCEPT, "a1", minutes=2)
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.accepted_at, lead.sla_phase) == (S.ACCEPTED, T0 + timedelta(minutes=2), "contact")
    assert lead.sla_deadline_at == lead.next_check_at == T0 + timedelta(minutes=32)  # contact within 30 minutes
    await act(session_factory, lead_id, Action.CONTACTED, "a1", minutes=10)
    lead = await get_lead(session_factory, lead_id)
    assert (lead.contacted_at, lead.sla_phase, lead.sla_deadline_at, lead.next_check_at) == (
        T0 + timedelta(minutes=10),
        "",
        None,
        None,
    )
    for minutes, action in enumerate(
        [Action.BOOK_TEST_DRIVE, Action.TEST_DRIVE_NO_SHOW, Action.BOOK_TEST_DRIVE, Action.TEST_DRIVE_DONE], start=20
    ):
        await act(session_factory, lead_id, action, "a1", minutes=minutes)
    await act(session_factory, lead_id, Action.ORDERED, "a1", minutes=30)
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.test_drive_at, lead.ordered_at) == (
        S.ORDERED,
        T0 + timedelta(minutes=23),
        T0 + timedelta(minutes=30),
    )
    assert await contact_stage(session_factory, "wmA") == "intent"
    await act(session_factory, lead_id, Action.DELIVERED, "a1", minutes=40)
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.closed_at) == (S.DELIVERED, T0 + timedelta(minutes=40))
    assert await contact_stage(session_factory, "wmA") == "owner"
    history = [(e.kind, e.from_status, e.to_status, e.actor) for e in await events(session_factory, lead_id)]
    assert history[1:] == [
        ("accepted", "assigned", "accepted", "a1"),
        ("contacted", "accepted", "contacted", "a1"),
        ("test_drive_booked", "contacted", "test_drive_booked", "a1"),
        ("test_drive_no_show", "test_drive_booked", "test_drive_no_show", "a1"),
        ("test_drive_booked", "test_drive_no_show", "test_drive_booked", "a1"),
        ("test_drive_done", "test_drive_booked", "test_drive_done", "a1"),
        ("ordered", "test_drive_done", "ordered", "a1"),
        ("delivered", "ordered", "delivered", "a1"),
    ]


async def test_contacting_implies_acceptance(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj)
    await act(session_factory, lead_id, Action.CONTACTED, "a1", minutes=3)
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.accepted_at, lead.contacted_at) == (
        S.CONTACTED,
        T0 + timedelta(minutes=3),
        lead.accepted_at,
    )
    assert lead.next_check_at is None and lead.sla_phase == ""


async def test_every_advisor_action_from_every_status(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    seeded = {}
    for status in ALLOWED:
        for action in ADVISOR_ACTIONS:
            seeded[status, action] = await add_lead(
                session_factory, f"wm-{status}-{action}", dealer_id=net.bj, status=status
            )
    outcomes: dict[tuple[str, Action], str] = {}
    for (status, action), lead_id in seeded.items():
        try:
            await act(session_factory, lead_id, action, "a1", reason="budget")
        except LeadActionError as exc:
            assert (exc.code, exc.http_status) == ("wrong_state", 409)
            assert exc.message_zh.startswith("线索当前状态为「")
            outcomes[status, action] = "refused"
            assert (await get_lead(session_factory, lead_id)).status == status  # nothing changed
        else:
            outcomes[status, action] = (await get_lead(session_factory, lead_id)).status
    expected = {
        (status, action): TARGET[action] if action in ALLOWED[status] else "refused"
        for status in ALLOWED
        for action in ADVISOR_ACTIONS
    }
    assert outcomes == expected


async def test_the_wrong_state_message_names_both_sides(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, status=S.ACCEPTED)
    error = await refused(session_factory, lead_id, Action.TEST_DRIVE_DONE, "a1")
    assert error.message_zh == "线索当前状态为「已接单」，不能标记为已到店试驾"
    error = await refused(session_factory, lead_id, Action.APPROVE_LOST, "m1")
    assert (error.http_status, error.message_zh) == (409, "线索当前状态为「已接单」，不能批准战败")


async def test_permissions(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, status=S.LOST_PENDING)
    fresh = await add_lead(session_factory, "wmB", dealer_id=net.bj)
    for actor in ("a2", "m1", "op", "s1"):
        error = await refused(session_factory, fresh, Action.ACCEPT, actor)
        assert (error.code, error.http_status, error.message_zh) == ("forbidden", 403, "这条线索不是您负责的，不能操作")
    for actor in ("a1", "a2", "m2", "op"):
        error = await refused(session_factory, lead_id, Action.APPROVE_LOST, actor)
        assert (error.http_status, error.message_zh) == (403, "只有该线索所属门店的经理才能执行此操作")
    for actor in ("gone", "nobody"):
        error = await refused(session_factory, fresh, Action.ACCEPT, actor)
        assert (error.http_status, error.message_zh) == (403, f"成员 {actor} 不存在或已停用，无权操作线索")
    error = await refused(session_factory, 999_999, Action.ACCEPT, "a1")
    assert (error.code, error.http_status, error.message_zh) == ("not_found", 404, "线索 999999 不存在")
    assert [e.kind for e in await events(session_factory, fresh)] == ["assigned"]
    assert (await get_lead(session_factory, lead_id)).status == S.LOST_PENDING


async def test_repeating_an_action_is_a_harmless_success(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj)
    assert (await act(session_factory, lead_id, Action.ACCEPT, "a1", minutes=1)).changed
    repeat = await act(session_factory, lead_id, Action.ACCEPT, "a1", minutes=2)
    assert not repeat.changed and repeat.lead.status == S.ACCEPTED
    assert (await get_lead(session_factory, lead_id)).accepted_at == T0 + timedelta(minutes=1)
    await act(session_factory, lead_id, Action.REQUEST_LOST, "a1", reason="budget", note="预算只有十万")
    assert not (await act(session_factory, lead_id, Action.REQUEST_LOST, "a1", reason="budget")).changed
    assert len(await notifications(session_factory, lead_id)) == 1  # m1 told once
    assert (await act(session_factory, lead_id, Action.APPROVE_LOST, "m1")).changed
    assert not (await act(session_factory, lead_id, Action.APPROVE_LOST, "m1")).changed
    kinds = [e.kind for e in await events(session_factory, lead_id)]
    assert kinds == ["assigned", "accepted", "lost_requested", "lost_approved"]
    # a repeat is only a repeat of what produced the current status
    other = await add_lead(session_factory, "wmB", dealer_id=net.bj)
    await act(session_factory, other, Action.CONTACTED, "a1")
    error = await refused(session_factory, other, Action.ACCEPT, "a1")
    assert error.message_zh == "线索当前状态为「已联系」，不能接单"


async def test_bad_lost_requests_change_nothing(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, status=S.CONTACTED)
    error = await refused(session_factory, lead_id, Action.REQUEST_LOST, "a1", reason="too_far")
    assert (error.code, error.http_status) == ("bad_reason", 400)
    assert error.message_zh.startswith(
        "战败原因 “too_far” 无效，可选：已在其他门店购车（bought_elsewhere）、选择了竞品品牌（competitor）"
    )
    assert "其他原因（other）" in error.message_zh
    error = await refused(session_factory, lead_id, Action.REQUEST_LOST, "a1")
    assert error.message_zh.startswith("战败原因 （未填写） 无效")
    error = await refused(session_factory, lead_id, Action.REQUEST_LOST, "a1", reason="other", note="长" * 513)
    assert (error.code, error.http_status, error.message_zh) == (
        "bad_note",
        400,
        "战败说明最多 512 个字（现在 513 个）",
    )
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.lost_reason, lead.status_before_lost) == (S.CONTACTED, "", "")
    assert await notifications(session_factory, lead_id) == []


def _lost_recall() -> SopServices:
    raw = yaml.safe_load(
        "id: lost_recall\nname: 战败召回\nkind: contact\ntrigger: {event: lead.lost}\n"
        "steps:\n  - immediately: true\n    private_message: {text: 您好}\n"
    )
    bundle = TemplateBundle(SopTemplate.model_validate(raw), raw, {}, "lost_recall.yaml")
    catalog = Catalog(bundles={bundle.id: bundle}, policy=Policy(), ok=True, generation=1)
    return SopServices(holder=CatalogHolder.fixed(catalog))


async def test_approved_lost_closes_the_lead_and_starts_the_recall_sop(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, status=S.CONTACTED)
    await act(session_factory, lead_id, Action.REQUEST_LOST, "a1", minutes=5, reason="competitor", note="去看了别家")
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.status_before_lost, lead.lost_reason, lead.lost_note) == (
        S.LOST_PENDING,
        S.CONTACTED,
        "competitor",
        "去看了别家",
    )
    [request] = await notifications(session_factory, lead_id)
    assert (request.userid, request.kind, request.title) == ("m1", "lost_request", "战败审批：客户wmA")
    assert "原因：选择了竞品品牌\n说明：去看了别家" in request.description
    with installed(_lost_recall()) as hooks:
        await act(session_factory, lead_id, Action.APPROVE_LOST, "m1", minutes=9, hooks=hooks)
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.closed_at, lead.next_check_at) == (S.LOST, T0 + timedelta(minutes=9), None)
    assert await contact_stage(session_factory, "wmA") == "lost"
    async with session_factory() as session:
        enrolled = (await session.exec(select(SopEnrolment.template_id, SopEnrolment.subject_id))).all()
    assert [tuple(row) for row in enrolled] == [("lost_recall", "wmA")]
    decision = (await notifications(session_factory, lead_id))[-1]
    assert (decision.userid, decision.title) == ("a1", "战败申请已通过：客户wmA")


async def test_rejected_lost_returns_to_the_advisor_with_the_note(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, status=S.ACCEPTED)
    await act(session_factory, lead_id, Action.REQUEST_LOST, "a1", minutes=5, reason="unreachable")
    assert (await get_lead(session_factory, lead_id)).next_check_at is None  # no SLA while the manager decides
    await act(session_factory, lead_id, Action.REJECT_LOST, "m1", minutes=8, note="再打两次电话")
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.lost_reason, lead.status_before_lost, lead.closed_at) == (S.ACCEPTED, "", "", None)
    assert (lead.sla_phase, lead.sla_deadline_at) == ("contact", T0 + timedelta(minutes=38))
    decision = (await notifications(session_factory, lead_id))[-1]
    assert (decision.userid, decision.kind, decision.title) == ("a1", "lost_decision", "战败申请被驳回：客户wmA")
    assert decision.description.endswith("线索回到「已接单」，请继续跟进。\n经理留言：再打两次电话")
    assert await contact_stage(session_factory, "wmA") == "intent"
    assert [e.kind for e in await events(session_factory, lead_id)][-2:] == ["lost_requested", "lost_rejected"]
    error = await refused(session_factory, lead_id, Action.REJECT_LOST, "m2")
    assert error.http_status == 403


def _message(
    msgid: str, *, userid: str = "a1", sender: str = "staff", chat: str = "single", minutes: float = 4
) -> Message:
    return Message(
        corp_id=CORP,
        source="archive",
        msgid=msgid,
        chat_type=chat,
        external_userid="wmA",
        userid=userid,
        sender_type=sender,
        text="您好，我是您的销售顾问",
        sent_at=T0 + timedelta(minutes=minutes),
    )


async def test_the_advisors_message_to_the_customer_is_the_first_contact(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, at=T0 + timedelta(minutes=1))
    ignored = [
        _message("m-other", userid="a2"),
        _message("m-group", chat="group"),
        _message("m-customer", sender="customer"),
        _message("m-before", minutes=0),  # sent before the lead was assigned
    ]
    async with write_transaction(session_factory) as session:
        for message in ignored:
            assert not await on_staff_message(session, CORP, message, now=T0 + timedelta(minutes=6))
    assert (await get_lead(session_factory, lead_id)).status == S.ASSIGNED
    async with write_transaction(session_factory) as session:
        await on_message_stored(
            session,
            CORP,
            _message("m-1"),
            intent=intent_for("sop_templates"),
            hooks=process_services("sop_templates"),
            now=T0 + timedelta(minutes=6),
        )
    lead = await get_lead(session_factory, lead_id)
    assert (lead.status, lead.accepted_at, lead.contacted_at, lead.next_check_at) == (
        S.CONTACTED,
        T0 + timedelta(minutes=4),
        T0 + timedelta(minutes=4),
        None,
    )
    last = (await events(session_factory, lead_id))[-1]
    assert (last.kind, last.actor, last.detail) == ("contacted_by_message", "a1", {"msgid": "m-1", "source": "archive"})
    async with write_transaction(session_factory) as session:
        assert not await on_staff_message(session, CORP, _message("m-2", minutes=7), now=T0 + timedelta(minutes=8))
    # the explicit action afterwards is the same fact: a harmless repeat
    assert not (await act(session_factory, lead_id, Action.CONTACTED, "a1", minutes=9)).changed


# -- reassign (scrm.leads.assignment.reassign) ----------------------------------------------------------------


async def test_a_manager_reassigns_within_their_dealer(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj, status=S.CONTACTED)
    outcome = await act(session_factory, lead_id, Action.REASSIGN, "m1", minutes=3, advisor_userid="a2")
    assert outcome.changed and outcome.lead.status == S.ASSIGNED
    lead = await get_lead(session_factory, lead_id)
    assert (lead.advisor_userid, lead.assignment_no, lead.sla_phase) == ("a2", 2, "accept")
    told = {(n.userid, n.kind) for n in await notifications(session_factory, lead_id)}
    assert told == {("a2", "new_lead"), ("a1", "reassigned_away")}
    assert [(e.kind, e.actor) for e in await events(session_factory, lead_id)][-2:] == [
        ("assigned", "m1"),
        ("reassigned", "m1"),
    ]
    assert not (await act(session_factory, lead_id, Action.REASSIGN, "m1", advisor_userid="a2")).changed
    error = await refused(session_factory, lead_id, Action.REASSIGN, "m1", advisor_userid="s1")
    assert (error.http_status, error.message_zh) == (400, "成员 s1 不属于您的门店，不能接这条线索")
    error = await refused(session_factory, lead_id, Action.REASSIGN, "m1", advisor_userid="gone")
    assert (error.http_status, error.message_zh) == (400, "成员 gone 不存在或已停用")
    for actor in ("a2", "m2"):
        assert (await refused(session_factory, lead_id, Action.REASSIGN, actor, advisor_userid="a1")).http_status == 403


async def test_reassign_without_an_advisor_picks_the_next_one(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    lead_id = await add_lead(session_factory, "wmA", dealer_id=net.bj)
    await act(session_factory, lead_id, Action.REASSIGN, "m1")
    assert (await get_lead(session_factory, lead_id)).advisor_userid == "a2"


async def test_operators_reassign_any_lead_including_pool_leads(session_factory: SessionFactory) -> None:
    net = await seed_network(session_factory)
    pooled = await add_lead(session_factory, "wmP", dealer_id=None, status=S.POOL)
    error = await refused(session_factory, pooled, Action.REASSIGN, "op")
    assert (error.http_status, error.message_zh) == (400, "这条线索没有所属门店，请指定接手的顾问")
    assert (await refused(session_factory, pooled, Action.REASSIGN, "m1", advisor_userid="a1")).http_status == 403
    await act(session_factory, pooled, Action.REASSIGN, "op", advisor_userid="s1")
    lead = await get_lead(session_factory, pooled)
    assert (lead.status, lead.advisor_userid, lead.dealer_id) == (S.ASSIGNED, "s1", net.sh)
    pending = await add_lead(session_factory, "wmL", dealer_id=net.bj, status=S.LOST_PENDING)
    error = await refused(session_factory, pending, Action.REASSIGN, "op", advisor_userid="a2")
    assert (error.http_status, error.message_zh) == (409, "线索当前状态为「战败待审批」，不能重新分配")


async def test_an_action_holds_the_lead_so_the_sla_tick_skips_it(pg_url: str) -> None:
    """PostgreSQL: while an advisor's action holds the lead, the SLA tick's SKIP LOCKED claim passes it by."""
    from scrm.db import make_engine, make_session_factory
    from scrm.leads.escalation import run_sla_checks

    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    try:
        net = await seed_network(factory)
        lead_id = await add_lead(factory, "wmA", dealer_id=net.bj)
        late = T0 + timedelta(minutes=6)  # the accept deadline (5 minutes) has passed
        async with write_transaction(factory) as session:
            await perform(session, lead_services(), CORP, lead_id, Action.ACCEPT, actor="a1", now=late)
            assert await run_sla_checks(factory, lead_services(), late) == 0
        lead = await get_lead(factory, lead_id)
        assert (lead.status, lead.sla_phase) == (S.ACCEPTED, "contact")
        assert [e.kind for e in await events(factory, lead_id)] == ["assigned", "accepted"]
    finally:
        await engine.dispose()
