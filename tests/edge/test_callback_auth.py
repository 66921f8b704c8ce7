"""Refused callbacks, authentication: signature, timestamp window, receiver id, corp, ciphertext.

Each refusal answers its status with an empty body, logs exactly one line with its reason, stores nothing.
"""

from __future__ import annotations

import pytest

from tests.edge.conftest import EdgeClient, Rows, assert_refused, refusals
from tests.edge.wecom_callbacks import NOW, CallbackSigner, contact_event

# ---- refusals: authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 17, 39])
async def test_one_altered_signature_character_is_refused(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, position: int
) -> None:
    callback = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    sig = callback.query["msg_signature"]
    altered = sig[:position] + ("a" if sig[position] != "a" else "b") + sig[position + 1 :]
    query = {**callback.query, "msg_signature": altered}
    await assert_refused(
        client, "POST", edge_log, stored_rows, status=403, reason="bad_signature", query=query, body=callback.body
    )


async def test_altered_signature_on_url_check_is_refused(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    query = signer.verify_url("123")
    query["msg_signature"] = query["msg_signature"][:-1] + ("0" if query["msg_signature"][-1] != "0" else "1")
    await assert_refused(client, "GET", edge_log, stored_rows, status=403, reason="bad_signature", query=query)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_missing_signature_is_refused(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, method: str
) -> None:
    callback = signer.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    query = signer.verify_url("1") if method == "GET" else dict(callback.query)
    del query["msg_signature"]
    body = callback.body if method == "POST" else b""
    await assert_refused(
        client, method, edge_log, stored_rows, status=400, reason="missing_parameters", query=query, body=body
    )
    assert "msg_signature" in refusals(edge_log)[0]["message"]


@pytest.mark.parametrize(
    ("offset", "reason"), [(-301, "stale_timestamp"), (301, "future_timestamp")], ids=["stale", "future"]
)
async def test_timestamp_outside_the_window_is_refused(
    client: EdgeClient,
    signer: CallbackSigner,
    stored_rows: Rows,
    edge_log: pytest.LogCaptureFixture,
    offset: int,
    reason: str,
) -> None:
    callback = signer.post(contact_event("del_follow_user", userid="u", external_userid="wmA"), timestamp=NOW + offset)
    await assert_refused(
        client, "POST", edge_log, stored_rows, status=403, reason=reason, query=callback.query, body=callback.body
    )


async def test_stale_url_check_is_refused(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    query = signer.verify_url("123", timestamp=NOW - 3600)
    await assert_refused(client, "GET", edge_log, stored_rows, status=403, reason="stale_timestamp", query=query)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_message_for_another_receiver_is_refused(
    client: EdgeClient, stored_rows: Rows, edge_log: pytest.LogCaptureFixture, method: str
) -> None:
    other = CallbackSigner(receive_id="wwAnotherCorp00001")
    callback = other.post(contact_event("add_external_contact", userid="u", external_userid="wmA"))
    query = other.verify_url("123") if method == "GET" else callback.query
    body = callback.body if method == "POST" else b""
    await assert_refused(
        client, method, edge_log, stored_rows, status=403, reason="wrong_receiver", query=query, body=body
    )
    assert "wwAnotherCorp00001" in refusals(edge_log)[0]["message"]


async def test_inner_to_user_name_of_another_corp_is_refused(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    doc = contact_event("add_external_contact", userid="u", external_userid="wmA").replace(
        "wx5823bf96d3bd56c7", "wwSomebodyElse"
    )
    callback = signer.post(doc)
    await assert_refused(
        client, "POST", edge_log, stored_rows, status=403, reason="wrong_corp", query=callback.query, body=callback.body
    )


async def test_undecryptable_garbage_with_a_valid_signature_is_400(
    client: EdgeClient, signer: CallbackSigner, stored_rows: Rows, edge_log: pytest.LogCaptureFixture
) -> None:
    garbage = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx"
    callback = signer.signed_envelope(f"<xml><Encrypt>{garbage}</Encrypt></xml>", garbage)
    await assert_refused(
        client,
        "POST",
        edge_log,
        stored_rows,
        status=400,
        reason="decrypt_failed",
        query=callback.query,
        body=callback.body,
    )
