"""Acceptance: a campaign to 10,000 groups of 500 owners against the emulator's rate limit R, on a virtual clock.

The emulator limits ``externalcontact/add_msg_template`` to R calls in any 60 s (45009 and a 60 s block beyond),
our client's limiter allows R a minute and the planner paces batches at R a minute. The run must finish within
1.1 × the least time R allows — N batches need ``ceil(N / R)`` windows, the first at once, so
``(ceil(N / R) − 1) × 60 s`` from the first call — with one WeCom task per batch, every group covered once, and
the groups at their quota skipped with the reason ``quota`` (which also means fewer, smaller batches).

Full size (500 × 20) on both backends: a few seconds each, since the clock jumps to each batch's ``not_before``.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlmodel import select

from scrm.campaigns.tracking import sync_batches
from scrm.db import SessionFactory, transaction
from scrm.models import CampaignBatch, CampaignRun, CommandStatus, OutboxCommand, TargetStatus
from scrm.touches import record_touches
from tests.campaigns.support import CampaignWorld, campaign_world, chat_id, group_spec, owner_id
from tests.conftest import TEST_CORP_ID

API = "externalcontact/add_msg_template"
OWNERS, GROUPS_PER_OWNER = 500, 20
RATE = 120  # calls a minute: 500 batches need 5 windows, 4 minutes after the first call
ALLOWED_RATIO = 1.1


def minimum_seconds(batches: int, rate: int) -> float:
    """The least time from the first call to the last that a sliding window of ``rate`` a minute allows."""
    return (math.ceil(batches / rate) - 1) * 60.0


async def run_campaign(world: CampaignWorld, rate: int) -> tuple[CampaignRun, float, float]:
    """Plan and send the campaign with the emulator, the client and the planner all at ``rate``; returns the run,
    the seconds from the start of planning to the last add_msg_template WeCom accepted, and the minimum."""
    world.calls_per_minute = rate
    world.state.rate_limits.set_limit(API, per_minute=rate)
    await world.save(group_spec())
    started = world.clock.now()
    [run] = await world.plan()
    await world.dispatch_until_idle()
    created = sorted(msg.created_at for msg in world.state.group_msgs.values())
    assert created, "no task was created"
    # Independent of the emulator's limiter: no R + 1 tasks were ever created within one sliding minute.
    assert all(later - earlier >= 60 for earlier, later in zip(created, created[rate:], strict=False))
    return run, created[-1] - started, minimum_seconds(run.batches, rate)


async def assert_never_throttled(world: CampaignWorld, calls: int) -> None:
    """WeCom never refused a call, and our own limiter never turned a wait into a retry."""
    counters = world.state.counters
    assert counters.api_errors[(API, 45009)] == 0
    assert world.state.rate_limits.blocked_until(API) == 0.0
    assert counters.api_calls[API] == calls  # one call per batch
    assert counters.api_calls["externalcontact/get_groupmsg_list_v2"] == 0  # no retry needed reconciling
    async with world.sessions() as session:
        commands = (await session.exec(select(OutboxCommand.status, OutboxCommand.attempts))).all()
    assert Counter(commands) == {(CommandStatus.DONE.value, 1): calls}


async def assert_one_task_per_batch(world: CampaignWorld, expected: dict[str, list[str]]) -> list[CampaignBatch]:
    """``expected``: owner → the chat ids their one batch must reach. Compares Lianyi's batches (once the outbox
    results are moved onto them) with the emulator's tasks; returns the batches."""
    while await sync_batches(world.sessions, world.clock.utcnow()):
        pass
    batches = await world.batches()
    assert sorted(b.sender for b in batches) == sorted(expected)
    assert all(b.status == "created" and b.msgid and b.fail_count == 0 for b in batches)
    tasks = world.state.group_msgs
    assert sorted(b.msgid for b in batches) == sorted(tasks)  # one WeCom task per batch, no other task
    for batch in batches:
        msg = tasks[batch.msgid]
        assert msg.creator == batch.sender and list(msg.tasks) == [batch.sender]
        assert sorted(r.recipient for r in msg.recipients) == sorted(expected[batch.sender])
        assert batch.target_count == len(expected[batch.sender])
    coverage = world.state.group_send_coverage("group")
    assert sorted(coverage) == sorted(c for chats in expected.values() for c in chats)
    assert all(len(msgids) == 1 for msgids in coverage.values())
    return batches


async def test_campaign_to_every_group_finishes_at_the_rate_limit(session_factory: SessionFactory) -> None:
    owners, rate = OWNERS, RATE
    async with campaign_world(session_factory, api_rate_per_minute=rate) as world:
        await world.seed_groups(owners=owners, groups_per_owner=GROUPS_PER_OWNER, members=1)
        run, elapsed, minimum = await run_campaign(world, rate)
        assert (run.targets, run.skipped, run.batches) == (owners * GROUPS_PER_OWNER, 0, owners)
        await assert_never_throttled(world, owners)
        await assert_one_task_per_batch(world, world.chats)
        assert minimum == 4 * 60  # 5 windows of R calls
        ratio = elapsed / minimum
        print(
            f"\n{owners} batches at {rate}/min: {elapsed:.3f} s (virtual), minimum {minimum:.0f} s, ratio {ratio:.4f}"
        )
        assert minimum <= elapsed <= ALLOWED_RATIO * minimum


def quota_touches(chat: str, count: int, at: Any, n: int) -> list[dict[str, Any]]:
    """``count`` group sends already received by ``chat`` (half from campaigns, half from SOPs: one ledger)."""
    return [
        {
            "corp_id": TEST_CORP_ID,
            "recipient_type": "group",
            "recipient_id": chat,
            "kind": "group_message",
            "source": "campaign" if k % 2 else "sop",
            "counts_cap": False,
            "counts_quota": True,
            "ref": f"seed:{chat}:{n}:{k}",
            "at": at,
        }
        for k in range(count)
    ]


async def test_groups_at_their_quota_are_skipped_and_batches_shrink(session_factory: SessionFactory) -> None:
    owners, rate = OWNERS, RATE
    full_owners = owners * 8 // 100  # 8 %: every group at its quota, so no batch at all
    partial_owners = owners * 40 // 100  # 40 %: their first group at its quota → batches of 19
    near_owners = owners * 4 // 100  # 4 %: first group one send below its quota → still sent
    async with campaign_world(session_factory, api_rate_per_minute=rate) as world:
        await world.seed_groups(owners=owners, groups_per_owner=GROUPS_PER_OWNER, members=1)
        now = world.clock.utcnow()
        limit = world.policy.quota_limit(now)
        window_start, _ = world.policy.quota_window(now)
        at_quota = [chat_id(o, g) for o in range(full_owners) for g in range(GROUPS_PER_OWNER)]
        at_quota += [chat_id(o, 0) for o in range(full_owners, full_owners + partial_owners)]
        near = [chat_id(o, 0) for o in range(full_owners + partial_owners, full_owners + partial_owners + near_owners)]
        rows = [row for n, c in enumerate(at_quota) for row in quota_touches(c, limit, window_start, n)]
        rows += [row for n, c in enumerate(near) for row in quota_touches(c, limit - 1, now - timedelta(days=1), n)]
        async with transaction(world.sessions) as session:
            await record_touches(session, rows)
        assert len(at_quota) == owners * GROUPS_PER_OWNER // 10  # 1,000 of 10,000

        run, elapsed, minimum = await run_campaign(world, rate)
        quota_hit = set(at_quota)
        expected = {
            owner: [c for c in chats if c not in quota_hit]
            for owner, chats in world.chats.items()
            if any(c not in quota_hit for c in chats)
        }
        batches = owners - full_owners
        assert (run.targets, run.skipped, run.batches) == (owners * GROUPS_PER_OWNER, len(at_quota), batches)
        targets = await world.targets()
        skipped = {t.target_id: t.reason for t in targets if t.status == TargetStatus.SKIPPED.value}
        assert skipped == dict.fromkeys(at_quota, "quota")
        assert all(t.batch_no is None for t in targets if t.target_id in skipped)
        await assert_never_throttled(world, batches)
        sent = await assert_one_task_per_batch(world, expected)
        assert not quota_hit & set(world.state.group_send_coverage("group"))  # never sent
        assert Counter(b.target_count for b in sent) == {
            GROUPS_PER_OWNER - 1: partial_owners,
            GROUPS_PER_OWNER: owners - full_owners - partial_owners,
        }
        assert owner_id(0) not in {b.sender for b in sent}
        assert minimum == 3 * 60  # 460 batches: 4 windows of R calls
        ratio = elapsed / minimum
        print(
            f"\n{batches} batches at {rate}/min: {elapsed:.3f} s (virtual), minimum {minimum:.0f} s, ratio {ratio:.4f}"
        )
        assert minimum <= elapsed <= ALLOWED_RATIO * minimum
