"""Exactly once across processes: two `lianyi serve --roles scheduler` processes share the leader lock; the
leader is SIGKILLed in the middle of running due SOP steps, the other takes over; duplicate triggers are
replayed meanwhile. Every step's command exists once and the emulator receives every message once.

The outbox dispatcher (and the edge/worker) run in the test process against the emulator; only the leader-only
SOP ticks run in the subprocesses, so the kill lands inside a tick.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from bot.runtime.assembly import Role
from scrm.db import write_transaction
from scrm.db_types import utcnow
from scrm.models import FollowRelation, OutboxCommand, SopEnrolment, SopStepRun
from scrm.sop.engine import enrol
from scrm.sop.source import load_folder
from tests.e2e.serve_env import serve_env

pytestmark = pytest.mark.slow

LIANYI = Path(sys.executable).with_name("lianyi")
CONTACTS = 120
TEMPLATE = """\
id: failover_nurture
name: 故障切换培育
kind: contact
trigger: {event: contact.added}
steps:
  - id: s1
    after: 1m
    private_message: {text: "第1条 {{ contact.external_userid }}"}
  - id: s2
    after: 2m
    private_message: {text: "第2条 {{ contact.external_userid }}"}
  - id: s3
    after: 3m
    advisor_task: {text: "第3条 {{ contact.external_userid }}"}
  - id: s4
    after: 10m
    private_message: {text: "第4条 {{ contact.external_userid }}"}
"""
POLICY = """\
quiet_hours: {start: "00:00", end: "00:00"}
caps: {per_day: 0, per_week: 0}
"""


def _env(stack: LocalStack, sop_dir: Path, instance: str) -> dict[str, str]:
    return serve_env(stack, instance, SOP_DIR=str(sop_dir), SOP_TICK_SECONDS="0.2", LEADER_TTL_SECONDS="3")


async def _scheduler(stack: LocalStack, sop_dir: Path, instance: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            str(LIANYI),
            "serve",
            "--roles",
            "scheduler",
            "--port",
            "0",
            env=_env(stack, sop_dir, instance),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def _count(stack: LocalStack, model: type[SopStepRun] | type[OutboxCommand]) -> int:
    async with stack.session_factory() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def _locked_by_others(stack: LocalStack) -> int:
    """Due enrolments another transaction holds (FOR UPDATE SKIP LOCKED skips them)."""
    due = (SopEnrolment.status == "active", col(SopEnrolment.next_due_at) <= utcnow())
    async with stack.session_factory() as session, session.begin():
        total = (await session.exec(select(func.count()).select_from(SopEnrolment).where(*due))).one()
        free = (await session.exec(select(SopEnrolment.id).where(*due).with_for_update(skip_locked=True))).all()
        return int(total) - len(free)


async def test_leader_killed_mid_tick_every_step_once(
    pg_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    sop_dir = tmp_path / "sop"
    sop_dir.mkdir()
    (sop_dir / "failover_nurture.yaml").write_text(TEMPLATE, encoding="utf-8")
    (sop_dir / "policy.yaml").write_text(POLICY, encoding="utf-8")
    loaded = load_folder(sop_dir)
    assert loaded.problems == []
    bundle = loaded.bundles["failover_nurture"]
    stack = LocalStack(
        scenario=load_scenario(),
        database_url=pg_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        roles=frozenset({Role.EDGE, Role.WORKER, Role.DISPATCHER}),
        settings_overrides={"log_json": False, "sop_dir": str(sop_dir)},
    )
    processes: list[asyncio.subprocess.Process] = []
    try:
        async with stack:
            await stack.seed_dealers()
            state = stack.state
            staff = sorted(u for u, member in state.staff.items() if member.has_contact_permission)
            for i in range(CONTACTS):  # customers WeCom already has; the full sync mirrors them (no callbacks)
                state.add_contact(staff[i % len(staff)], f"wm_fo_{i:04d}", name=f"客户{i}")
            await stack.full_sync()
            async with stack.session_factory() as session:
                relations = (
                    await session.exec(
                        select(FollowRelation.external_userid, FollowRelation.userid)
                        .where(col(FollowRelation.deleted_at).is_(None))
                        .order_by(col(FollowRelation.external_userid))
                    )
                ).all()
            chosen = list(dict(relations).items())[:CONTACTS]
            assert len(chosen) == CONTACTS

            # enrolled 9m40s ago: steps 1–3 are overdue, step 4 falls due ~20 s into the run
            enrolled_at = utcnow() - timedelta(minutes=10) + timedelta(seconds=20)

            async def enrol_all() -> int:
                created = 0
                async with write_transaction(stack.session_factory) as session:
                    for external_userid, userid in chosen:
                        created += await enrol(
                            session,
                            stack.runtime.services.sop,
                            bundle,
                            corp_id=state.corp_id,
                            subject_type="contact",
                            subject_id=external_userid,
                            staff_userid=userid,
                            context={"event": "contact.added"},
                            at=enrolled_at,
                        )
                return created

            assert await enrol_all() == CONTACTS
            state.faults.set_latency(0.01, 0.01)  # WeCom answers slowly: work is in flight at the kill

            leader = await _scheduler(stack, sop_dir, "sop-leader", tmp_path / "leader.log")
            processes.append(leader)
            await asyncio.sleep(1.0)  # the first process takes the lock before the second starts
            standby = await _scheduler(stack, sop_dir, "sop-standby", tmp_path / "standby.log")
            processes.append(standby)

            # kill the leader while it holds due enrolments locked, i.e. inside a tick's transaction
            async with asyncio.timeout(60):
                while True:
                    if await _locked_by_others(stack):
                        break
                    await asyncio.sleep(0.002)
            leader.send_signal(signal.SIGKILL)
            assert await leader.wait() == -signal.SIGKILL
            runs_at_kill = await _count(stack, SopStepRun)
            assert runs_at_kill < 3 * CONTACTS  # the killed tick's transaction never committed

            assert await enrol_all() == 0  # duplicate triggers while the standby takes over

            expected_messages = 3 * CONTACTS  # s1, s2, s4 are group sends; s3 is an app card
            async with asyncio.timeout(90):
                while True:
                    runs = await _count(stack, SopStepRun)
                    if runs >= 4 * CONTACTS and len(state.counters.group_sends) >= expected_messages:
                        break
                    await asyncio.sleep(0.2)
            await stack.wait_until_settled(within=30)
    finally:
        for proc in processes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    standby_log = (tmp_path / "standby.log").read_text(errors="replace")
    assert "Traceback" not in standby_log, standby_log[-3000:]
    async with stack.session_factory() as session:
        keys = (await session.exec(select(SopStepRun.step_key))).all()
        commands = (
            await session.exec(select(OutboxCommand).where(col(OutboxCommand.idempotency_key).startswith("sop:")))
        ).all()
        enrolments = (await session.exec(select(SopEnrolment))).all()
    assert len(keys) == len(set(keys)) == 4 * CONTACTS
    assert len(commands) == 4 * CONTACTS and all(c.status == "done" for c in commands)
    assert {e.status for e in enrolments} == {"completed"}
    received = Counter((d.recipient, d.text) for d in state.counters.group_sends)
    assert len(received) == expected_messages and set(received.values()) == {1}
    for external_userid, _ in chosen:
        texts = sorted(d.text for d in state.counters.received_by(external_userid))
        assert texts == [f"第{n}条 {external_userid}" for n in (1, 2, 4)]
    cards = Counter(m.body["textcard"]["description"] for m in state.counters.app_messages if m.msgtype == "textcard")
    assert len(cards) == CONTACTS and set(cards.values()) == {1}
