"""kill -9 at each stage of a campaign — planning, after WeCom accepted add_msg_template but before the outbox
committed it, and tracking — and a new process resumes with no duplicate task and no lost target.

Real `lianyi serve` subprocesses (scheduler leader: the ``campaign_due`` and ``campaign_tracking`` ticks;
dispatcher: the ADD_MSG_TEMPLATE commands) on PostgreSQL + Redis; the emulator runs in the test process on the
wall clock (see :mod:`tests.e2e.campaign_crash_world`). Each test ends with the same invariant
(:meth:`CrashWorld.assert_exactly_once`): one run, every group planned once and in exactly one batch, one command
and one msgid per batch, exactly one emulator task per batch and every group covered by exactly one task.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.emulator.group_owners import NEVER_CONFIRMS, GroupSendOwners, OwnerProfile
from bot.runtime.campaign_wiring import track_once
from bot.wecom.client import build_wecom_client
from scrm.campaigns.tracking import DEFAULT_POLL
from scrm.contact_policy import load_policy
from scrm.db_types import utcnow
from scrm.models import RunStatus, TargetStatus
from tests.campaigns.support import AGENT_ID, SECRET, owner_id
from tests.conftest import make_settings
from tests.e2e.campaign_crash_world import CrashWorld, KillOnCall, crash_world, group_campaign, wait_for

pytestmark = pytest.mark.slow

# 20,000 groups: planning them is one transaction of about two seconds. Owner sizes hit the chunk edges
# (2,001 → 2 batches, 2,000 → 1, 1,999 → 1, 4,000 → 2), and four owners of 2,500 (2 batches each): 14 batches.
PLANNING_SIZES = [2001, 2000, 1999, 4000] + [2500] * 4
PLANNED_TABLES = ("campaign_runs", "campaign_targets", "campaign_batches", "outbox_commands", "contact_touches")
# Open transactions of the database's other backends that have written to campaign_runs (plan_run inserts the run
# row first thing), with every table they have written to. A table write takes a ROW EXCLUSIVE lock on the table
# that is held until the transaction commits or rolls back, so this sees uncommitted work that no query can.
PLANNING_WRITES = """
SELECT l.pid, array_agg(DISTINCT c.relname::text ORDER BY c.relname::text) AS tables
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'RowExclusiveLock' AND c.relkind = 'r'
  AND a.datname = current_database() AND a.pid <> pg_backend_pid()
GROUP BY l.pid
HAVING bool_or(c.relname = 'campaign_runs')
"""


def _report(name: str, figures: dict[str, float | int | str]) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))


async def _written_by_planning(conn: asyncpg.Connection, table: str) -> tuple[int, list[str], float]:
    """Poll (a few ms apart) until an open planning transaction has written ``table``: its backend's pid, the
    tables it has written, and when."""
    async with asyncio.timeout(60):
        while True:
            held = await conn.fetch(PLANNING_WRITES)
            if held and table in held[0]["tables"]:
                return int(held[0]["pid"]), list(held[0]["tables"]), time.monotonic()
            await asyncio.sleep(0.003)


async def _all_batches_created(world: CrashWorld, count: int) -> bool:
    batches = await world.batches()
    return len(batches) == count and all(b.status == "created" and b.msgid for b in batches)


async def test_kill_9_during_planning(pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    async with crash_world(pg_url, redis_url, redis_prefix, tmp_path) as world:
        began = time.monotonic()
        await world.start("dispatcher", "dispatcher")
        victim = await world.start("scheduler", "planner-victim")
        chats = await world.seed_groups(PLANNING_SIZES)  # while the processes start
        seeded = time.monotonic()
        await world.save(group_campaign("planning_crash"))

        # Kill while the planning transaction is open: it has inserted the run row and written the targets, yet
        # nothing of it is visible to others (see PLANNING_WRITES).
        conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
        try:
            _, _, opened = await _written_by_planning(conn, "campaign_runs")
            backend, written_at_kill, _ = await _written_by_planning(conn, "campaign_targets")
            await world.kill(victim)
            killed = time.monotonic()
            # its backend sees the client gone and ends (rolling back); a COMMIT sent just before the kill would
            # have been applied by then, and would show below
            gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
            await wait_for(lambda: conn.fetchval(gone, backend), within=30, what="the killed planner's backend ends")
            left = [await conn.fetchval(f"SELECT count(*) FROM {t}") for t in PLANNED_TABLES]
        finally:
            await conn.close()
        assert left == [0] * len(PLANNED_TABLES)  # the kill came before the commit: nothing is left behind
        assert world.state.group_msgs == {}

        await world.start("scheduler", "planner-successor")
        await wait_for(world.runs, within=60, what="the run planned again")
        planned = time.monotonic()
        await wait_for(lambda: _all_batches_created(world, 14), within=60, what="every batch's task created")
        created = time.monotonic()
        batches = await world.assert_exactly_once(chats)
        assert len(batches) == 14 and sorted(b.target_count for b in batches) == [1] + [500] * 4 + [1999] + [2000] * 8
        runs = await world.runs()
        assert (runs[0].targets, runs[0].batches, runs[0].skipped) == (sum(PLANNING_SIZES), 14, 0)
        assert world.tracebacks() == []
        _report(
            "planning crash",
            {
                "groups": sum(PLANNING_SIZES),
                "seed_s": seeded - began,
                "planning_open_at_kill_s": killed - opened,
                "written_at_kill": "+".join(written_at_kill),
                "kill_to_planned_s": planned - killed,
                "kill_to_tasks_created_s": created - killed,
            },
        )


async def test_kill_9_after_wecom_accepted_before_commit(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    async with crash_world(pg_url, redis_url, redis_prefix, tmp_path) as world:
        processes: dict[str, asyncio.subprocess.Process] = {}
        # the victim dies when WeCom has created the task of owner0000's 500-group batch, before it hears so
        hook = KillOnCall(
            "externalcontact/add_msg_template",
            nth=1,
            victim=lambda: processes["victim"],
            match=lambda body: len(body.get("chat_id_list") or []) == 500,
        )
        world.hooks[hook.api] = hook
        await world.start("scheduler", "scheduler")
        processes["victim"] = await world.start("dispatcher", "dispatcher-victim")
        # owner0000 has 2,500 groups: batches of 2,000 and 500 with the same text, so reconciliation has to tell
        # two tasks of one creator apart by their recipients; five more owners of 300 groups, one batch each
        chats = await world.seed_groups([2500, 300, 300, 300, 300, 300])
        world.state.faults.set_latency(0.05, 0.05)  # several commands are in flight at the kill
        await world.save(group_campaign("commit_crash"))
        async with asyncio.timeout(60):
            await hook.fired.wait()
        killed = time.monotonic()
        msgid = hook.answer["msgid"]
        assert msgid in world.state.group_msgs  # WeCom has the task …
        key = next(b.key for b in await world.batches() if b.target_count == 500)
        command = next(c for c in await world.commands() if c.idempotency_key == key)
        assert (command.status, command.attempts, command.result) == ("running", 1, None)  # … the outbox does not

        await world.start("dispatcher", "dispatcher-successor")
        await wait_for(lambda: _all_batches_created(world, 7), within=60, what="the command reclaimed and reconciled")
        finished = time.monotonic()
        batches = await world.assert_exactly_once(chats)
        assert len(batches) == 7
        hooked = next(b for b in batches if b.key == key)
        assert hooked.msgid == msgid and hooked.recovered and hooked.fail_count == 0
        command = next(c for c in await world.commands() if c.idempotency_key == key)
        assert command.attempts == 2 and command.result == {"msgid": msgid, "fail_list": [], "recovered": True}
        assert world.state.counters.api_calls["externalcontact/get_groupmsg_list_v2"] >= 1
        assert world.tracebacks() == []
        recovered = [b.batch_no for b in batches if b.recovered]
        _report(
            "commit crash",
            {
                "batches": len(batches),
                "recovered_batches": len(recovered),
                "add_msg_template_calls": world.state.counters.api_calls["externalcontact/add_msg_template"],
                "attempts": ",".join(str(c.attempts) for c in await world.commands()),
                "kill_to_all_tasks_known_s": finished - killed,
            },
        )


async def test_kill_9_during_tracking(pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    async with crash_world(pg_url, redis_url, redis_prefix, tmp_path) as world:
        state = world.state
        state.groupmsg_auto_confirm = False
        profiles = {owner_id(n): OwnerProfile(confirm_after=delay) for n, delay in enumerate((1.0, 2.0, 4.0, 8.0))}
        profiles[owner_id(4)] = OwnerProfile(confirm_after=None, after_reminder=0.0)  # only after a reminder
        profiles[owner_id(5)] = NEVER_CONFIRMS
        owners = GroupSendOwners(state, profiles)
        stop = asyncio.Event()
        owners_task = asyncio.create_task(owners.run(stop, interval=0.1))
        processes: dict[str, asyncio.subprocess.Process] = {}
        # the leader dies inside a tracking pass, on the second per-group result read before its answer: the batch
        # read first is applied, the one being read has its confirmation only, the rest of the pass waits
        hook = KillOnCall("externalcontact/get_groupmsg_send_result", nth=2, victim=lambda: processes["victim"])
        world.hooks[hook.api] = hook
        try:
            await world.start("dispatcher", "dispatcher")
            processes["victim"] = await world.start("scheduler", "tracker-victim")
            chats = await world.seed_groups([30] * 6)
            await world.save(group_campaign("tracking_crash"))
            async with asyncio.timeout(60):
                await hook.fired.wait()
            killed = time.monotonic()
            at_kill = {b.msgid: b for b in await world.batches()}
            cut = at_kill[hook.request["msgid"]]
            assert cut.confirmed_at is not None and not cut.results_final  # mid-batch: confirmed, results unread
            assert any(b.results_final for b in at_kill.values())  # the first read was applied

            successor = await world.start("scheduler", "tracker-successor")

            async def confirming_owners_sent() -> bool:
                sent = [t for t in await world.targets() if t.status == TargetStatus.SENT.value]
                return len(sent) == 4 * 30

            await wait_for(confirming_owners_sent, within=60, what="the successor reads every confirmed task")
            resumed = time.monotonic()
            await world.stop(successor)

            # The rest of the story takes days (reminders 2 h apart, a task given up after 3 days): the test is the
            # leader now and runs the same tracking pass at each instant a batch falls due, on a clock it moves.
            passes = await _track_for_days(world, owners)
        finally:
            stop.set()
            await owners_task

        assert await world.run_status() == RunStatus.DONE.value
        batches = await world.assert_exactly_once(chats)
        by_owner = {b.sender: b for b in batches}
        statuses = {(t.sender, t.status) for t in await world.targets()}
        assert statuses == {(owner_id(n), TargetStatus.SENT.value) for n in range(5)} | {
            (owner_id(5), TargetStatus.UNSENT.value)
        }
        for batch in batches:  # never more than 3 reminders in 24 h, in the database and at WeCom
            times = sorted(batch.reminders or [])
            assert all(len([t for t in times if 0 <= _hours(t, first) < 24]) <= 3 for first in times)
            assert len(state.group_msgs[batch.msgid].reminders) == len(times) <= 3
        assert state.counters.api_errors[("externalcontact/remind_groupmsg_send", 40058)] == 0
        assert len(by_owner[owner_id(5)].reminders or []) == 3  # the campaign's remind.max, then given up
        assert [a.userid for a in owners.did("reminder")] == [owner_id(4)]
        assert world.tracebacks() == []
        _report(
            "tracking crash",
            {
                "kill_to_confirmed_read_s": resumed - killed,
                "virtual_passes": passes,
                "reminders": sum(len(b.reminders or []) for b in batches),
            },
        )


def _hours(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds() / 3600


async def _track_for_days(world: CrashWorld, owners: GroupSendOwners) -> int:
    """Tracking passes at each next ``next_track_at`` until the run is done; returns how many passes ran."""
    policy = load_policy(world.sop_dir / "policy.yaml")
    config = make_settings(wecom_api_base=world.emulator.base_url, app_secret=SECRET, agent_id=AGENT_ID)
    now = utcnow()
    passes = 0
    async with aiohttp.ClientSession() as http:
        client = build_wecom_client(config, http, None)
        while await world.run_status() != RunStatus.DONE.value:
            due = [
                b.next_track_at
                for b in await world.batches()
                if b.status == "created" and not b.results_final and b.next_track_at
            ]
            assert due and passes < 1000, "a batch that is not final has no next poll"
            now = max(now, min(due)) + timedelta(milliseconds=1)
            await track_once(client, world.sessions, now, policy, DEFAULT_POLL)
            owners.step()  # an owner who reacts to reminders confirms right away
            passes += 1
    return passes
