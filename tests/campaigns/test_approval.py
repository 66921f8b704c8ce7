"""Campaign approval: who may approve or reject (real users, never the author), what a pending / rejected
campaign does (nothing), what saving the file again does to an approval, and the audit trail
(scrm.campaigns.service)."""

from __future__ import annotations

import itertools
import re

import pytest
from sqlmodel import col, select

from scrm.accounts.actors import ActorRefused
from scrm.audit import canonical_digest
from scrm.campaigns.service import CampaignError, Saved, approve, cancel, get_campaign, reject, save_campaign
from scrm.campaigns.spec import CampaignSpec
from scrm.db import SessionFactory, transaction
from scrm.models import AuditLog, Campaign, CampaignStatus, RunStatus
from tests.campaigns.support import CampaignWorld, campaign_world, group_spec, spec
from tests.conftest import TEST_CORP_ID

AUTHOR = "operator1"
APPROVAL = "approval: true\n"
CJK = re.compile(r"[\u4e00-\u9fff]")


async def prepared(world: CampaignWorld) -> None:
    """Groups to push to; the accounts (author, approvers, an advisor, a disabled operator) come with the world."""
    await world.seed_groups(owners=2, groups_per_owner=2)


async def save(world: CampaignWorld, spec: CampaignSpec, *, by: str = AUTHOR) -> Saved:
    async with transaction(world.sessions) as session:
        return await save_campaign(session, TEST_CORP_ID, spec, by=by, now=world.clock.utcnow())


async def do_approve(world: CampaignWorld, by: str, code: str = "friday") -> Campaign:
    async with transaction(world.sessions) as session:
        return await approve(session, TEST_CORP_ID, code, by=by, now=world.clock.utcnow())


async def do_reject(world: CampaignWorld, by: str, reason: str, code: str = "friday") -> Campaign:
    async with transaction(world.sessions) as session:
        return await reject(session, TEST_CORP_ID, code, by=by, reason=reason, now=world.clock.utcnow())


async def current(world: CampaignWorld, code: str = "friday") -> Campaign:
    async with world.sessions() as session:
        return await get_campaign(session, TEST_CORP_ID, code)


async def test_pending_campaign_is_not_planned(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        saved = await save(world, group_spec(extra=APPROVAL))
        assert saved.outcome == "created"
        assert saved.campaign.status == CampaignStatus.PENDING_APPROVAL.value
        assert saved.campaign.requires_approval
        assert await world.plan() == []
        await world.advance(86_400)
        assert await world.plan() == []
        assert await world.runs() == []
        assert world.state.group_msgs == {}


@pytest.mark.parametrize(
    ("approver", "refusal", "expected"),
    [
        (AUTHOR, CampaignError, "创建人不能审批"),
        ("advisor1", ActorRefused, "用户 advisor1（销售顾问）无权执行此操作（campaign.approve）"),
        ("admin1", CampaignError, None),  # admins hold every permission: refused only when they saved it
        ("nobody", ActorRefused, "没有用户 nobody"),
        ("operator_gone", ActorRefused, "用户 operator_gone 已停用"),
    ],
)
async def test_approval_refused(
    session_factory: SessionFactory, approver: str, refusal: type[Exception], expected: str | None
) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, group_spec(extra=APPROVAL), by=approver if expected is None else AUTHOR)
        expected = expected or "创建人不能审批"
        with pytest.raises(refusal) as refused:
            await do_approve(world, approver)
        assert expected in str(refused.value)
        assert CJK.search(str(refused.value))
        campaign = await current(world)
        assert campaign.status == CampaignStatus.PENDING_APPROVAL.value
        assert (campaign.approved_by, campaign.approved_at) == ("", None)
        assert await world.plan() == []


@pytest.mark.parametrize("approver", ["operator2", "manager1"])
async def test_approved_campaign_runs(session_factory: SessionFactory, approver: str) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, group_spec(extra=APPROVAL))
        await world.advance(600)
        approved = await do_approve(world, approver)
        assert approved.status == CampaignStatus.SCHEDULED.value
        assert (approved.approved_by, approved.approved_at) == (approver, world.clock.utcnow())
        with pytest.raises(CampaignError, match="不需要审批"):
            await do_approve(world, "manager1" if approver == "operator2" else "operator2")
        runs = await world.plan()
        assert [(r.slot, r.status) for r in runs] == [("now", RunStatus.SENDING.value)]
        assert len(await world.batches()) == 2  # one per owner
        with pytest.raises(CampaignError, match="不需要审批"):
            await do_approve(world, approver)  # done now: nothing to approve either


async def test_rejection_needs_a_reason_and_stops_the_campaign(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, group_spec(extra=APPROVAL))
        for blank in ("", "   "):
            with pytest.raises(CampaignError, match="驳回需要填写原因"):
                await do_reject(world, "manager1", blank)
        with pytest.raises(ActorRefused, match="无权执行此操作"):
            await do_reject(world, "advisor1", "文案不合规")
        with pytest.raises(CampaignError, match="创建人不能驳回"):
            await do_reject(world, AUTHOR, "自己驳回自己")
        assert (await current(world)).status == CampaignStatus.PENDING_APPROVAL.value
        rejected = await do_reject(world, "manager1", "  文案不合规，请修改  ")
        assert rejected.status == CampaignStatus.REJECTED.value
        assert rejected.rejected_reason == "文案不合规，请修改"
        with pytest.raises(CampaignError, match="已驳回"):
            await do_approve(world, "operator2")
        with pytest.raises(CampaignError, match="不能驳回"):
            await do_reject(world, "manager1", "再驳回一次")
        for _ in range(3):
            assert await world.plan() == []
            await world.advance(86_400)
        assert await world.runs() == []
        assert (await current(world)).status == CampaignStatus.REJECTED.value


def at_spec(text: str) -> CampaignSpec:
    """Friday's campaign, but at Saturday 19:00 and needing approval."""
    return spec(
        f"""\
        code: friday
        name: 周末试驾活动
        chat_type: group
        content: {{text: "{text}"}}
        schedule: {{at: "2026-12-05 19:00"}}
        approval: true
        """
    )


async def test_saving_again_keeps_or_resets_the_approval(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, at_spec("原文案"))
        await do_approve(world, "operator2")
        assert await world.plan() == []  # approved, but not due before Saturday 19:00
        same = await save(world, at_spec("原文案"), by="operator2")
        assert same.outcome == "unchanged"
        kept = await current(world)
        assert (kept.status, kept.approved_by, kept.created_by) == (CampaignStatus.SCHEDULED.value, "operator2", AUTHOR)
        changed = await save(world, at_spec("改过的文案"), by="operator2")  # the approver edits it
        assert changed.outcome == "updated"
        reset = await current(world)
        assert reset.status == CampaignStatus.PENDING_APPROVAL.value
        assert (reset.approved_by, reset.approved_at, reset.created_by) == ("", None, "operator2")
        await world.advance(2 * 86_400)  # past the ``at`` time: still waits for the new approval
        assert await world.plan() == []
        with pytest.raises(CampaignError, match="创建人不能审批"):
            await do_approve(world, "operator2")  # nobody approves their own edit
        await do_approve(world, "manager1")
        runs = await world.plan()
        assert [r.slot for r in runs] == ["2026-12-05T19:00"]
        await world.dispatch_until_idle()
        texts = {str((m.text or {}).get("content")) for m in world.state.group_msgs.values()}
        assert texts == {"改过的文案"}


async def test_changed_rejected_campaign_asks_again(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, group_spec(extra=APPROVAL, text="第一版"))
        await do_reject(world, "operator2", "请改文案")
        assert (await save(world, group_spec(extra=APPROVAL, text="第一版"))).outcome == "unchanged"
        assert (await current(world)).status == CampaignStatus.REJECTED.value
        assert (await save(world, group_spec(extra=APPROVAL, text="第二版"))).outcome == "updated"
        again = await current(world)
        assert (again.status, again.rejected_reason) == (CampaignStatus.PENDING_APPROVAL.value, "")
        assert await world.plan() == []


async def test_campaign_without_approval_is_scheduled_at_once(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        saved = await save(world, group_spec())
        assert (saved.campaign.status, saved.campaign.requires_approval) == (CampaignStatus.SCHEDULED.value, False)
        runs = await world.plan()
        assert [r.slot for r in runs] == ["now"]
        assert (await current(world)).status == CampaignStatus.DONE.value


@pytest.mark.parametrize("finished", ["done", "cancelled"])
async def test_saving_over_a_finished_campaign_is_refused(session_factory: SessionFactory, finished: str) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, group_spec(text="第一版"))
        if finished == "done":
            await world.plan()
            expected = "已发送完毕"
        else:
            async with transaction(world.sessions) as session:
                await cancel(session, TEST_CORP_ID, "friday", by="operator2", now=world.clock.utcnow())
            expected = "已取消"
        assert (await current(world)).status == finished
        with pytest.raises(CampaignError, match=expected):
            await save(world, group_spec(text="第二版"))
        assert (await save(world, group_spec(text="第一版"))).outcome == "unchanged"  # the same file: a no-op
        campaign = await current(world)
        assert campaign.status == finished
        assert campaign.spec["content"]["text"] == "第一版"
        assert await world.plan() == []


async def test_audit_trail(session_factory: SessionFactory) -> None:
    async with campaign_world(session_factory) as world:
        await prepared(world)
        await save(world, group_spec(extra=APPROVAL, text="第一版"))
        await do_reject(world, "manager1", "请改文案")
        await save(world, group_spec(extra=APPROVAL, text="第二版"))
        await save(world, group_spec(extra=APPROVAL, text="第二版"))  # unchanged: no row
        await do_approve(world, "operator2")
        async with world.sessions() as session:
            rows = (
                await session.exec(
                    select(AuditLog)
                    .where(AuditLog.subject_type == "campaign", AuditLog.subject_id == "friday")
                    .order_by(col(AuditLog.id))
                )
            ).all()
        assert [(r.action, r.actor) for r in rows] == [
            ("campaign.created", AUTHOR),
            ("campaign.rejected", "manager1"),
            ("campaign.updated", AUTHOR),
            ("campaign.approved", "operator2"),
        ]
        assert all(r.corp_id == TEST_CORP_ID for r in rows)
        details = [r.detail or {} for r in rows]
        assert details[1]["reason"] == "请改文案"
        assert details[3]["hash"] == group_spec(extra=APPROVAL, text="第二版").spec_hash()
        assert details[0]["before_sha256"] is None  # created: nothing before
        for earlier, later in itertools.pairwise(details):
            assert later["before_sha256"] == earlier["after_sha256"]  # each change starts where the last ended
            assert later["before_sha256"] != later["after_sha256"]
        stored = await current(world)
        assert details[3]["after_sha256"] == canonical_digest(stored.model_dump())  # the row as it is now
