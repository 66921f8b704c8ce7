"""Refused callbacks, request shape: size, hostile or malformed XML, JSON, parameters, methods.

Each refusal answers its status with an empty body, logs exactly one line with its reason, stores nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.inbox.sql import SqlInbox
from tests.conftest import make_settings
from tests.edge.conftest import PATH, ClientFactory, EdgeClient, Rows, assert_refused, refusals
from tests.edge.test_xmlparse import BILLION_LAUGHS, EXTERNAL_ENTITY
from tests.edge.wecom_callbacks import CallbackSigner, contact_event

# ---- refusals: request shape -------------------------------------------------------------------------


@pytest.fixture
async def small_client(make_client: ClientFactory, database_url: str, inbox: SqlInbox) -> EdgeClient:
    return await make_client(make_settings(database_url=database_url, max_body_bytes=1024), inbox)


def _big_callback(signer: CallbackSigner) -> tuple[dict[str, str], str]:
    doc = contact_event("add_external_contact", userid="u", external_userid="wmA", State="x" * 2000)
    callback = signer.post(doc)
    assert len(callback.body) > 1024
    return callback.query, callback.body


async def test_oversize_body_with_content_length_is_413(
    small_client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    query, body = _big_callback(signer)
    await assert_refused(
        small_client, "POST", edge_log, stored_rows, status=413, reason="body_too_large", query=query, body=body
    )
    assert "Content-Length" in refusals(edge_log)[0]["message"]


async def test_oversize_chunked_body_without_content_length_is_413(
    small_client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    query, body = _big_callback(signer)

    async def chunks() -> AsyncIterator[bytes]:
        data = body.encode()
        for start in range(0, len(data), 256):
            yield data[start : start + 256]

    resp = await small_client.post(PATH, params=query, data=chunks())
    assert resp.status == 413
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert [(r["reason"], r["status"]) for r in refusals(edge_log)] == [("body_too_large", 413)]
    assert "Content-Length" not in refusals(edge_log)[0]["message"]
    assert await stored_rows() == []


async def test_small_body_passes_the_size_limit(
    small_client: EdgeClient, signer: CallbackSigner, stored_rows: Rows
) -> None:
    callback = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    assert len(callback.body) < 1024
    assert (await small_client.post(PATH, params=callback.query, data=callback.body)).status == 200
    assert len(await stored_rows()) == 1


@pytest.mark.parametrize(
    "body",
    ["<xml><Encrypt>abc</Encrypt>", "<xml><ToUserName>wx</ToUserName></xml>", "<root><Encrypt>abc</Encrypt></root>"],
    ids=["unclosed", "no-encrypt", "wrong-root"],
)
async def test_malformed_outer_xml_is_400(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, body: str
) -> None:
    callback = signer.signed_envelope(body, "abc")
    reason = "missing_encrypt" if body.startswith("<xml><ToUserName>") else "malformed_outer_xml"
    await assert_refused(
        client, "POST", edge_log, stored_rows, status=400, reason=reason, query=callback.query, body=body
    )


async def test_malformed_inner_xml_is_400(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    callback = signer.post("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><MsgType>event")
    await assert_refused(
        client,
        "POST",
        edge_log,
        stored_rows,
        status=400,
        reason="malformed_inner_xml",
        query=callback.query,
        body=callback.body,
    )


def _outer_with(document_prefix: str, signer: CallbackSigner) -> tuple[dict[str, str], str]:
    """A correctly signed envelope whose XML carries ``document_prefix`` (a DOCTYPE) before <xml>."""
    callback = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    return callback.query, document_prefix + callback.body


@pytest.mark.parametrize("layer", ["outer", "inner"])
async def test_entity_expansion_bomb_is_400(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, layer: str
) -> None:
    if layer == "outer":
        callback = signer.signed_envelope(
            BILLION_LAUGHS.replace("<Content>", "<Encrypt>").replace("</Content>", "</Encrypt>"), "x"
        )
    else:
        callback = signer.post(BILLION_LAUGHS)
    await assert_refused(
        client,
        "POST",
        edge_log,
        stored_rows,
        status=400,
        reason=f"malformed_{layer}_xml",
        query=callback.query,
        body=callback.body,
    )
    assert "entity declaration" in refusals(edge_log)[0]["message"]


@pytest.mark.parametrize("layer", ["outer", "inner"])
async def test_external_entity_is_400_and_never_read(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, layer: str
) -> None:
    if layer == "outer":
        callback = signer.signed_envelope(EXTERNAL_ENTITY.replace("Content", "Encrypt"), "x")
    else:
        callback = signer.post(EXTERNAL_ENTITY)
    await assert_refused(
        client,
        "POST",
        edge_log,
        stored_rows,
        status=400,
        reason=f"malformed_{layer}_xml",
        query=callback.query,
        body=callback.body,
    )
    message = refusals(edge_log)[0]["message"]
    assert "file:///etc/passwd" in message and "root:" not in message


async def test_dtd_is_400_even_with_a_valid_signature(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    query, body = _outer_with("<!DOCTYPE xml [<!ELEMENT xml ANY>]>", signer)
    await assert_refused(
        client, "POST", edge_log, stored_rows, status=400, reason="malformed_outer_xml", query=query, body=body
    )
    assert "DOCTYPE" in refusals(edge_log)[0]["message"]


async def test_json_body_is_400(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    callback = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    encrypt = callback.body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    body = '{"encrypt": "' + encrypt + '"}'
    await assert_refused(
        client, "POST", edge_log, stored_rows, status=400, reason="malformed_outer_xml", query=callback.query, body=body
    )


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_missing_query_parameters_are_400(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, method: str
) -> None:
    body = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA")).body
    await assert_refused(
        client,
        method,
        edge_log,
        stored_rows,
        status=400,
        reason="missing_parameters",
        body=body if method == "POST" else b"",
    )
    message = refusals(edge_log)[0]["message"]
    assert "msg_signature, timestamp, nonce" in message
    assert ("echostr" in message) == (method == "GET")


async def test_put_is_405(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    callback = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    await assert_refused(
        client,
        "PUT",
        edge_log,
        stored_rows,
        status=405,
        reason="method_not_allowed",
        query=callback.query,
        body=callback.body,
    )
    resp = await client.delete(PATH, params=callback.query)
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, POST"
