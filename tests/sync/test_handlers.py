"""Callbacks from the emulated WeCom world, parsed as the edge parses them, through the router to the
sync services: every event type is handled, each event is one transaction, replays change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.edge.events import known_event_types, parse_event
from bot.emulator.clock import ManualClock
from bot.emulator.state import EmulatorState
from bot.runtime.handlers import register_sync_handlers
from bot.runtime.router import HandlerContext, Router
from bot.settings import Settings
from scrm.channel import build_state
from scrm.commands import CommandKind
from scrm.db import SessionFactory
from scrm.db_types import utcnow
from scrm.models import AuditLog, CustomerGroup, FollowRelation, GroupMember
from tests.conftest import TEST_CORP_ID, make_settings
from tests.domain_support import sop_process_services
from tests.sync.helpers import commands, dump, rows

SOP_DIR = Path(__file__).resolve().parents[2] / "sop_templates"


class Notifications:
    """Counts ``notify_outbox`` calls (the context's hook for waking the dispatcher)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def router() -> Router:
    router = Router()
    register_sync_handlers(router)
    return router


@pytest.fixture
def notified() -> Notifications:
    return Notifications()


@pytest.fixture
def ctx(session_factory: SessionFactory, database_url: str, notified: Notifications) -> HandlerContext:
    settings: Settings = make_settings(database_url=database_url, sop_dir=str(SOP_DIR))
    return HandlerContext(
        session_factory=session_factory,
        settings=settings,
        now=utcnow,
        notify_outbox=notified,
        services=sop_process_services(settings.sop_dir),
    )


@pytest.fixture
def world() -> EmulatorState:
    state = EmulatorState(TEST_CORP_ID, clock=ManualClock(), seed=1)
    state.add_app("test-secret", 1000002)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("zhangwei", "张伟", "BJ001")
    state.add_staff("wangfang", "王芳", "BJ001")
    state.put_tag_group("意向车型", ["轿车", "SUV"])
    return state


async def _deliver(router: Router, ctx: HandlerContext, fields: dict[str, Any]) -> None:
    assert await router.dispatch(parse_event(fields), ctx)


def test_every_event_type_has_a_handler(router: Router) -> None:
    assert router.event_types == known_event_types()


async def test_world_callbacks_apply_and_replay_changes_nothing(
    router: Router, ctx: HandlerContext, world: EmulatorState, session_factory: SessionFactory, notified: Notifications
) -> None:
    clock = world.clock
    assert isinstance(clock, ManualClock)
    events: list[dict[str, Any]] = []

    def happen(fields: dict[str, Any]) -> dict[str, Any]:
        clock.advance(1)
        events.append(fields)
        return fields

    added = happen(world.add_contact("zhangwei", name="王先生", state=build_state(channel="ad", dealer="BJ001")))
    customer = str(added["ExternalUserID"])
    half = happen(world.half_add("wangfang", name="李女士"))
    happen(world.mark_tags_in_client("zhangwei", customer, add=[next(iter(world.all_tags())).id]))
    happen(world.staff_delete_contact("wangfang", str(half["ExternalUserID"]), source="DELETE_BY_TRANSFER"))
    happen(world.transfer_fail("wangfang", customer))
    created = happen(world.create_group("zhangwei", "望京车友群", [customer]))
    chat_id = str(created["ChatId"])
    other = str(happen(world.add_contact("zhangwei", name="赵先生"))["ExternalUserID"])
    happen(world.join_group(chat_id, [other]))
    happen(world.leave_group(chat_id, [customer], quit_scene=1))
    happen(world.rename_group(chat_id, "望京车主群"))
    happen(world.create_tag_group("购车预算", ["20万以下", "20-30万"]))
    happen(world.shuffle_tags())
    happen(world.contact_deletes_staff("zhangwei", other))
    happen(world.dismiss_group(chat_id))

    for fields in events:
        await _deliver(router, ctx, fields)
    assert notified.count == len(events)

    relations = {(r.external_userid, r.userid): r for r in await rows(session_factory, FollowRelation)}
    assert relations[(customer, "zhangwei")].channel == "ad" and relations[(customer, "zhangwei")].deleted_at is None
    assert relations[(str(half["ExternalUserID"]), "wangfang")].deleted_by == "transfer"
    assert relations[(other, "zhangwei")].deleted_by == "customer"
    [welcome, *_] = await commands(session_factory, CommandKind.SEND_WELCOME)
    assert welcome.payload["template"] == "ad.j2" and welcome.payload["external_userid"] == customer
    members = {m.member_id: m for m in await rows(session_factory, GroupMember)}
    assert members[customer].quit_scene == 1 and members[other].left_at is None
    [group] = await rows(session_factory, CustomerGroup)
    assert group.status == "dismissed"
    assert len(await commands(session_factory, CommandKind.REFRESH_CORP_TAGS)) == 2
    assert {c.payload["chat_id"] for c in await commands(session_factory, CommandKind.FETCH_GROUP)} == {chat_id}
    actions = sorted(e.action for e in await rows(session_factory, AuditLog))
    assert actions == [
        "contact.churned",
        "contact.deleted_by_transfer",
        "contact.intent_level",  # the process's services score the customer's group join (an intent signal)
        "contact.transfer_failed",
        "group.dismissed",
    ]

    before = await dump(session_factory)
    for fields in events:  # WeCom retries: the same callbacks again
        await _deliver(router, ctx, fields)
    assert await dump(session_factory) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"ToUserName": TEST_CORP_ID, "CreateTime": "1700000000", "MsgType": "event", "Event": "enter_agent"},
    ],
)
async def test_unknown_events_are_logged_only(
    router: Router,
    ctx: HandlerContext,
    session_factory: SessionFactory,
    fields: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = await dump(session_factory)
    caplog.set_level("INFO", logger="bot.runtime.handlers")
    await _deliver(router, ctx, fields)
    assert await dump(session_factory) == before
    assert parse_event(fields).event_type in caplog.text or "no sync action" in caplog.text
