"""End to end, with the production logging setup at DEBUG for every logger: a customer is added through real
callbacks, the staff member writes their phone number into the remark, the customer writes a phone number and
distinctive texts (the chat-archive ingest) and turns hot (a lead is handed off), then is erased while WeCom
re-delivers the old add. The captured log holds none of their name, phone numbers or texts; the database holds
nothing of the customer either. SQLite with in-process backends, PostgreSQL with the Redis inbox."""

from __future__ import annotations

import io
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlmodel import select

from bot.emulator.localstack import LocalStack
from bot.logs import configure_logging
from scrm.channel import build_state
from scrm.db import transaction
from scrm.db_types import utcnow
from scrm.models import Contact, Lead
from scrm.privacy.erase import erase_customer
from tests.e2e import lead_world as world
from tests.privacy.world import database_dump, leaked

pytestmark = pytest.mark.slow

EU = "wm_log_privacy_customer_01"
NAME = "司马青衫"
PHONE = "13812345678"
REMARK_PHONE = "15900001111"
TEXTS = (
    f"我的手机号是{PHONE}，方便的话打给我",
    "紫藤花园三单元的车位还空着",
    *world.HOT_TEXTS,
)
ADVISOR = world.advisor_id(0, 0)


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The logging of `lianyi serve` (JSON lines) at DEBUG into a buffer; the root's handlers restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("DEBUG", json_lines=True, stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _sop_folder(dest: Path) -> Path:
    """The shipped templates (welcome, nurture, keywords…) with the handoff rules of the lead e2e world."""
    shutil.copytree(world.SHIPPED, dest)
    (dest / "handoff.yaml").write_text(yaml.safe_dump(world.HANDOFF_RULES, allow_unicode=True), "utf-8")
    return dest


async def _ingest(stack: LocalStack, path: str, records: list[dict[str, Any]]) -> None:
    url = stack.callback_url.replace("/wecom/callback", path)
    headers = {"Authorization": f"Bearer {world.INGEST_TOKEN}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=records, headers=headers) as response:
        assert response.status == 200, await response.text()


def _messages() -> list[dict[str, Any]]:
    now = time.time()
    return [
        {"msgid": f"log-m{n}", "sent_at": now + n * 0.001, "external_userid": EU, "userid": ADVISOR, "text": text}
        for n, text in enumerate(TEXTS)
    ]


async def test_no_phone_number_or_message_text_reaches_the_log(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, debug_log: io.StringIO
) -> None:
    with_redis = database_url.startswith("postgresql")
    overrides = {"sop_dir": str(_sop_folder(tmp_path / "sop")), "ingest_token": world.INGEST_TOKEN}
    stack = LocalStack(
        scenario=world.scenario(1),
        database_url=database_url,
        redis_url=redis_url if with_redis else "",
        redis_prefix=redis_prefix,
        settings_overrides=overrides,
    )
    async with stack:
        world.add_brand_staff(stack.state)
        await stack.seed_dealers()
        await stack.full_sync()
        driver = stack.driver()
        state = build_state(dealer=world.dealer_code(0), channel="qr", advisor=ADVISOR)
        added = stack.state.add_contact(ADVISOR, EU, name=NAME, state=state)
        assert (await driver.send(added)).ok
        edited = stack.state.edit_remark(ADVISOR, EU, remark=f"{NAME}先生", mobiles=[REMARK_PHONE])
        assert (await driver.send(edited)).ok
        await stack.wait_until_settled()
        await _ingest(stack, "/ingest/messages", _messages())
        form = {
            "kind": "form",
            "external_userid": EU,
            "ref": "log-form-1",
            "at": time.time(),
            "detail": {"phone": PHONE},
        }
        await _ingest(stack, "/ingest/behaviours", [form])
        await stack.wait_until_settled()
        async with stack.session_factory() as session:
            contact = (await session.exec(select(Contact).where(Contact.external_userid == EU))).one()
            lead = (await session.exec(select(Lead).where(Lead.external_userid == EU))).one()
        assert contact.name == NAME and lead.level == "H"  # the flow really ran: detail fetched, lead handed off

        async with transaction(stack.session_factory) as session:
            await erase_customer(session, stack.state.corp_id, EU, actor="admin", now=utcnow())
        assert (await driver.send(added)).ok  # WeCom re-delivers the old add after the erasure
        await stack.wait_until_settled()
        dump = await database_dump(database_url)
        async with stack.session_factory() as session:
            assert (await session.exec(select(Contact).where(Contact.external_userid == EU))).first() is None

    log = debug_log.getvalue()
    assert '"level": "DEBUG"' in log and "runtime started" in log  # the capture saw the run, at DEBUG
    assert leaked(log, (NAME, PHONE, REMARK_PHONE, *TEXTS)) == []
    # the re-delivered add sits in the inbox as delivered (ids only) and was dropped: no row of the customer came back
    assert leaked(dump, (NAME, PHONE, REMARK_PHONE, *TEXTS)) == []
    assert [line for line in dump.splitlines() if EU in line and "inbox_events" not in line] == []
