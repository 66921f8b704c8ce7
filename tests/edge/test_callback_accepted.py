"""Accepted callbacks over real HTTP: official vectors, typed rows in ``inbox_events``, dedup, outages.

Every accepted callback answers an empty 200 and is exactly one row (SQLite and PostgreSQL); an inbox that
cannot take the event answers 503 so WeCom retries, and the retry is then stored once.
"""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.edge.events import parse_event
from bot.inbox.base import InboxItem, InboxUnavailable
from bot.inbox.sql import SqlInbox
from bot.metrics import render_metrics
from bot.settings import Settings
from tests.conftest import make_settings
from tests.edge.conftest import PATH, ClientFactory, EdgeClient, Rows, assert_refused, callback_count
from tests.edge.wecom_callbacks import NOW, VECTORS, CallbackSigner, contact_event, inner_xml

# ---- official vectors --------------------------------------------------------------------------------


@pytest.fixture
async def vector_client(make_client: ClientFactory, database_url: str, inbox: SqlInbox) -> EdgeClient:
    """The 2014 official vectors need the timestamp window off (callback_max_age=0)."""
    settings = make_settings(database_url=database_url, callback_max_age=0)
    return await make_client(settings, inbox)


async def test_official_verify_url_vector_replies_the_plaintext_exactly(vector_client: EdgeClient) -> None:
    url = VECTORS["official"]["verify_url"]
    query = {k: url[k] for k in ("msg_signature", "timestamp", "nonce", "echostr")}
    resp = await vector_client.get(PATH, params=query)
    assert resp.status == 200
    assert await resp.read() == url["expected_reply"].encode()
    assert resp.content_type == "text/plain"


async def test_official_post_vector_is_decrypted_and_stored(vector_client: EdgeClient, stored_rows: Rows) -> None:
    post = VECTORS["official"]["post"]
    query = {k: post[k] for k in ("msg_signature", "timestamp", "nonce")}
    resp = await vector_client.post(PATH, params=query, data=post["body"])
    assert resp.status == 200
    assert await resp.read() == b""
    [row] = await stored_rows()
    assert (row.event_type, row.dedup_key, row.corp_id) == (
        "message.app",
        "msg:4561255354251345929",
        "wx5823bf96d3bd56c7",
    )
    assert row.payload["Content"] == "hello"
    assert row.payload["FromUserName"] == "mycreate"


# ---- accepted callbacks ------------------------------------------------------------------------------


async def test_contact_added_is_stored_with_its_typed_identity(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows
) -> None:
    callback = signer.post(contact_event("add_external_contact", userid="zhangsan", external_userid="wmA", State="x1"))
    before = callback_count("stored")
    resp = await client.post(PATH, params=callback.query, data=callback.body)
    assert resp.status == 200
    assert await resp.read() == b""
    [row] = await stored_rows()
    assert row.event_type == "contact.added"
    assert row.dedup_key == f"ec:add_external_contact:zhangsan:wmA:{NOW}"
    assert row.ordering_key == "contact:wmA"
    assert row.payload["State"] == "x1"
    assert callback_count("stored") == before + 1
    body, content_type = render_metrics()
    assert b"lianyi_callbacks_total" in body and b"lianyi_callback_ack_seconds_bucket" in body
    assert content_type.startswith("text/plain")


async def test_timestamps_at_the_window_edges_are_accepted(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, settings: Settings
) -> None:
    for i, timestamp in enumerate((NOW - settings.callback_max_age, NOW + settings.callback_max_age)):
        callback = signer.post(
            contact_event("edit_external_contact", userid="u", external_userid=f"wm{i}"), timestamp=timestamp
        )
        assert (await client.post(PATH, params=callback.query, data=callback.body)).status == 200
    assert len(await stored_rows()) == 2


async def test_verify_url_with_a_fresh_echostr(client: EdgeClient, signer: CallbackSigner) -> None:
    resp = await client.get(PATH, params=signer.verify_url("8327461927364"))
    assert resp.status == 200
    assert await resp.text() == "8327461927364"


async def test_unknown_event_is_acknowledged_stored_and_logged(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    doc = inner_xml(
        {
            "ToUserName": "wx5823bf96d3bd56c7",
            "FromUserName": "sys",
            "CreateTime": str(NOW),
            "MsgType": "event",
            "Event": "change_external_contact",
            "ChangeType": "customer_refused_future_type",
            "UserID": "zhangsan",
        }
    )
    callback = signer.post(doc)
    resp = await client.post(PATH, params=callback.query, data=callback.body)
    assert resp.status == 200
    assert await resp.read() == b""
    [row] = await stored_rows()
    assert row.event_type == "unknown"
    assert row.payload["ChangeType"] == "customer_refused_future_type"
    [line] = [r.getMessage() for r in edge_log.records if "unknown callback event" in r.getMessage()]
    assert "MsgType='event'" in line and "customer_refused_future_type" in line


async def test_the_same_callback_three_times_is_one_row(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows
) -> None:
    doc = contact_event("add_external_contact", userid="zhangsan", external_userid="wmA", WelcomeCode="WC")
    before = callback_count("duplicate")
    # WeCom retries with a fresh nonce and signature each time; the identity of the event is what counts.
    for nonce in ("111", "222", "333"):
        callback = signer.post(doc, nonce=nonce)
        resp = await client.post(PATH, params=callback.query, data=callback.body)
        assert resp.status == 200
        assert await resp.read() == b""
    assert len(await stored_rows()) == 1
    assert callback_count("duplicate") == before + 2


async def test_two_customers_added_by_one_staff_in_the_same_second_are_two_rows(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows
) -> None:
    for external in ("wmCustomerOne", "wmCustomerTwo"):
        callback = signer.post(contact_event("add_external_contact", userid="zhangsan", external_userid=external))
        assert (await client.post(PATH, params=callback.query, data=callback.body)).status == 200
    rows = await stored_rows()
    assert sorted(r.payload["ExternalUserID"] for r in rows) == ["wmCustomerOne", "wmCustomerTwo"]
    assert len({r.dedup_key for r in rows}) == 2


async def test_mem_change_list_with_one_item_is_stored_as_a_list_of_one(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows
) -> None:
    doc = inner_xml(
        {
            "ToUserName": "wx5823bf96d3bd56c7",
            "FromUserName": "sys",
            "CreateTime": str(NOW),
            "MsgType": "event",
            "Event": "change_external_chat",
            "ChatId": "wrGroup1",
            "ChangeType": "update",
            "UpdateDetail": "add_member",
            "JoinScene": "3",
            "MemChangeCnt": "1",
            "MemChangeList": ["wmOnlyMember"],
        }
    )
    callback = signer.post(doc)
    assert (await client.post(PATH, params=callback.query, data=callback.body)).status == 200
    [row] = await stored_rows()
    assert row.event_type == "group.updated"
    assert row.payload["MemChangeList"] == ["wmOnlyMember"]
    rebuilt = parse_event(row.payload)
    assert rebuilt.dedup_key == row.dedup_key
    assert getattr(rebuilt, "mem_change_list", None) == ("wmOnlyMember",)


# ---- the inbox cannot take the event ----------------------------------------------------------------


class OutageInbox:
    """Stand-in for an inbox whose store is down (the one allowed fake: an outage)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.attempts: list[InboxItem] = []

    async def put(self, item: InboxItem) -> bool:
        self.attempts.append(item)
        raise self.error

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "error",
    [InboxUnavailable("redis down"), ConnectionRefusedError(111, "refused"), RedisConnectionError("reset")],
    ids=["inbox-unavailable", "os-connection-error", "redis-connection-error"],
)
async def test_inbox_outage_is_503_then_the_retry_is_stored(
    make_client: ClientFactory,
    settings: Settings,
    inbox: SqlInbox,
    signer: CallbackSigner,
    stored_rows: Rows,
    edge_log: pytest.LogCaptureFixture,
    error: BaseException,
) -> None:
    down = OutageInbox(error)
    callback = signer.post(contact_event("add_external_contact", userid="zhangsan", external_userid="wmA"))
    down_client = await make_client(settings, down)
    await assert_refused(
        down_client,
        "POST",
        edge_log,
        stored_rows,
        status=503,
        reason="inbox_unavailable",
        query=callback.query,
        body=callback.body,
    )
    assert [item.dedup_key for item in down.attempts] == [f"ec:add_external_contact:zhangsan:wmA:{NOW}"]
    # WeCom retries the same callback; once the inbox is back it is stored exactly once.
    up_client = await make_client(settings, inbox)
    assert (await up_client.post(PATH, params=callback.query, data=callback.body)).status == 200
    [row] = await stored_rows()
    assert row.dedup_key == down.attempts[0].dedup_key
