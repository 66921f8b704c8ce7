"""``lianyi sync`` against the WeCom emulator: the mirror matches WeCom, a second pass changes nothing,
an interrupted pass resumes from its checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlmodel import col, select

from bot.emulator.clock import ManualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.runtime.fullsync import FullSync
from bot.settings import Settings
from bot.wecom.client import WeComClient, build_wecom_client
from bot.wecom.errors import RetryableError
from scrm.channel import build_state
from scrm.db import SessionFactory, transaction
from scrm.models import (
    Contact,
    ContactTag,
    CustomerGroup,
    Dealer,
    FollowRelation,
    GroupMember,
    Staff,
    SyncCheckpoint,
    Tag,
    TagGroup,
)
from tests.conftest import TEST_CORP_ID, make_settings
from tests.sync.helpers import dump, rows

SECRET = "test-secret"
BATCH = "externalcontact/batch/get_by_user"
ADVISORS = [f"adv{i:03d}" for i in range(1, 106)]  # 105 members: two batch/get_by_user chunks
CUSTOMERS = 130
RELATIONS = CUSTOMERS + CUSTOMERS // 10  # every tenth customer also follows a second advisor


def build_world() -> EmulatorState:
    clock = ManualClock()
    state = EmulatorState(TEST_CORP_ID, clock=clock, seed=3)
    state.add_app(SECRET, 1000002)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_dealer("SH002", "上海浦东4S店", "上海")
    for index, userid in enumerate(ADVISORS):
        state.add_staff(userid, f"顾问{index + 1}", "BJ001" if index % 2 == 0 else "SH002")
    state.add_staff("kefu", "客服", "BJ001", has_contact_permission=False)
    models = state.put_tag_group("意向车型", ["轿车", "SUV"], order=2)
    levels = state.put_tag_group("意向级别", ["H", "A", "B"], order=1)
    tag_ids = [*models.tags, *levels.tags]
    customers: list[str] = []
    for i in range(CUSTOMERS):  # 120 on three advisors of chunk 1 (two pages of 100), 10 on chunk 2
        userid = ADVISORS[i % 3] if i < 120 else ADVISORS[100 + i % 5]
        clock.advance(1)
        dealer = "BJ001" if userid in ADVISORS[::2] else "SH002"
        fields = state.add_contact(
            userid, name=f"客户{i}", state=build_state(channel="qr", dealer=dealer, advisor=userid)
        )
        ext = str(fields["ExternalUserID"])
        customers.append(ext)
        state.edit_remark(userid, ext, f"备注{i}")
        state.mark_tags_in_client(userid, ext, add=[tag_ids[i % len(tag_ids)]])
        if i % 10 == 0:  # some customers also follow a second advisor
            state.add_contact(ADVISORS[50], external_userid=ext, state="foreign-channel")
    for g in range(3):
        fields = state.create_group(ADVISORS[g], f"车友群{g}", customers[g * 20 : g * 20 + 15], notice="欢迎")
        chat_id = str(fields["ChatId"])
        state.join_group(chat_id, customers[100 + g : 103 + g])
        state.leave_group(chat_id, customers[g * 20 : g * 20 + 2])
    return state


@pytest.fixture
async def world() -> AsyncIterator[RunningEmulator]:
    async with await start_emulator(build_world()) as running:
        yield running


@pytest.fixture
async def client(world: RunningEmulator, database_url: str) -> AsyncIterator[WeComClient]:
    settings: Settings = make_settings(database_url=database_url, wecom_api_base=world.base_url, app_secret=SECRET)
    async with aiohttp.ClientSession() as http:
        yield build_wecom_client(settings, http, None)


async def _no_wait(_seconds: float) -> None:
    return None


def _sync(client: WeComClient, factory: SessionFactory, **kw: Any) -> FullSync:
    return FullSync(client, factory, TEST_CORP_ID, backoff=_no_wait, **kw)


async def _mirror(factory: SessionFactory) -> dict[str, Any]:
    """Our database in the shape of the emulator's snapshot."""
    dealers = {d.id: d.code for d in await rows(factory, Dealer)}
    staff = {
        s.userid: {
            "name": s.name,
            "dealer": dealers.get(s.dealer_id, ""),
            "contact_permission": s.has_contact_permission,
        }
        for s in await rows(factory, Staff)
    }
    contacts = {
        c.external_userid: {"name": c.name, "type": c.type, "gender": c.gender, "unionid": c.unionid}
        for c in await rows(factory, Contact)
    }
    tags_of: dict[tuple[str, str], list[str]] = {}
    for t in await rows(factory, ContactTag):
        tags_of.setdefault((t.external_userid, t.userid), []).append(t.tag_id)
    follows: dict[str, dict[str, Any]] = {}
    for f in await rows(factory, FollowRelation, col(FollowRelation.deleted_at).is_(None)):
        follows.setdefault(f.external_userid, {})[f.userid] = {
            "remark": f.remark,
            "description": f.description,
            "state": f.state,
            "add_way": f.add_way,
            "tags": sorted(tags_of.get((f.external_userid, f.userid), [])),
        }
    members = await rows(factory, GroupMember, col(GroupMember.left_at).is_(None))
    groups = {
        g.chat_id: {
            "name": g.name,
            "owner": g.owner_userid,
            "notice": g.notice,
            "member_version": g.member_version,
            "members": sorted(m.member_id for m in members if m.chat_id == g.chat_id),
            "customers": sorted(m.member_id for m in members if m.chat_id == g.chat_id and m.member_type == 2),
        }
        for g in await rows(factory, CustomerGroup)
    }
    live_tags = await rows(factory, Tag, col(Tag.deleted).is_(False))
    tag_groups = {
        g.group_id: {
            "name": g.name,
            "order": g.order,
            "tags": {t.tag_id: {"name": t.name, "order": t.order} for t in live_tags if t.group_id == g.group_id},
        }
        for g in await rows(factory, TagGroup, col(TagGroup.deleted).is_(False))
    }
    return {"staff": staff, "contacts": contacts, "follows": follows, "groups": groups, "tag_groups": tag_groups}


def _expected(state: EmulatorState) -> dict[str, Any]:
    snap = state.snapshot()
    for per_contact in snap["follows"].values():
        for follow in per_contact.values():
            follow.pop("half")
    for group in snap["groups"].values():
        group.pop("admins")
    for group in snap["tag_groups"].values():
        group.pop("strategy_id")
    # the full sync reads members with customer-contact permission only (get_follow_user_list)
    snap["staff"] = {u: s for u, s in snap["staff"].items() if s["contact_permission"]}
    return {k: snap[k] for k in ("staff", "contacts", "follows", "groups", "tag_groups")}


def _without_checkpoint_times(data: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    columns = [c.name for c in SyncCheckpoint.__table__.columns]  # type: ignore[attr-defined]
    at = columns.index("updated_at")
    return {**data, "sync_checkpoints": [row[:at] + row[at + 1 :] for row in data["sync_checkpoints"]]}


async def test_full_sync_mirrors_wecom_and_second_pass_changes_nothing(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    waits: list[float] = []

    async def record_wait(seconds: float) -> None:
        waits.append(seconds)

    world.state.faults.burst(BATCH, count=2, errcode=-1)  # WeCom busy twice: retried, not fatal
    report = await FullSync(client, session_factory, TEST_CORP_ID, backoff=record_wait).run()
    assert len(waits) == 2
    assert report.applied["contacts"] == RELATIONS and report.applied["groups"] == 3 and report.resumed == []
    assert await _mirror(session_factory) == _expected(world.state)
    relation = (await rows(session_factory, FollowRelation, FollowRelation.userid == ADVISORS[0]))[0]
    assert (relation.channel, relation.advisor_userid, relation.dealer_code) == ("qr", ADVISORS[0], "BJ001")
    [group] = [g for g in await rows(session_factory, CustomerGroup) if g.owner_userid == ADVISORS[0]]
    dealers = {d.code: d.id for d in await rows(session_factory, Dealer)}
    assert group.dealer_id == dealers["BJ001"] and group.member_count == 1 + 15 + 3 - 2

    before = await dump(session_factory)
    second = await _sync(client, session_factory).run()
    assert second.resumed == [] and second.applied == report.applied
    assert _without_checkpoint_times(await dump(session_factory)) == _without_checkpoint_times(before)


@pytest.mark.slow
async def test_interrupted_sync_resumes_after_the_last_finished_step(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    world.state.faults.burst("externalcontact/groupchat/get", count=4, errcode=-1)
    with pytest.raises(RetryableError):
        await _sync(client, session_factory).run()
    calls = dict(world.state.counters.api_calls)
    assert await rows(session_factory, CustomerGroup) == []

    report = await _sync(client, session_factory).run()
    assert report.resumed == ["tags", "staff", "contacts"]
    after = world.state.counters.api_calls
    for api in ("externalcontact/get_corp_tag_list", "user/get", BATCH):
        assert after[api] == calls[api], api
    assert await _mirror(session_factory) == _expected(world.state)

    world.state.faults.burst("externalcontact/groupchat/get", count=4, errcode=-1)
    with pytest.raises(RetryableError):
        await _sync(client, session_factory).run()
    restarted = await _sync(client, session_factory, restart=True).run()
    assert restarted.resumed == [] and restarted.applied["tags"] == 5


async def test_contacts_resume_from_the_saved_page_cursor(
    world: RunningEmulator, client: WeComClient, session_factory: SessionFactory
) -> None:
    await _sync(client, session_factory).run()
    first_chunk = sorted(ADVISORS)[:100]
    page1 = await client.batch_get_by_user(first_chunk, "", 100)
    page1_ids = {e["external_contact"]["external_userid"] for e in page1["external_contact_list"]}
    # the state an interrupted pass leaves: chunk 1 stopped after page 1, later steps not done
    async with transaction(session_factory) as s:
        for row in (await s.exec(select(SyncCheckpoint))).all():
            if row.step in ("contacts", "groups"):
                row.done, row.cursor = False, ""
            if row.scope == f"{first_chunk[0]}..{first_chunk[-1]}":
                row.cursor = page1["next_cursor"]
    async with transaction(session_factory) as s:
        for model in (ContactTag, FollowRelation, Contact):
            for item in (await s.exec(select(model))).all():
                await s.delete(item)
    calls_before = world.state.counters.api_calls[BATCH]

    report = await _sync(client, session_factory).run()
    assert report.resumed == ["tags", "staff"]
    assert world.state.counters.api_calls[BATCH] - calls_before == 2  # page 2 of chunk 1, then chunk 2
    synced = {c.external_userid for c in await rows(session_factory, Contact)}
    assert synced and page1_ids - synced  # contacts only on page 1 were not fetched again
