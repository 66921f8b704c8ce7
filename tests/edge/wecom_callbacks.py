"""Build real WeCom callbacks for tests: inner XML, AES-encrypted and signed like WeCom sends them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.edge.crypto import CallbackCrypto, build_post_body
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "wecom" / "vectors.json").read_text(encoding="utf-8")
)

# Wall-clock "now" of the edge under test; callbacks are stamped relative to it.
NOW = 1_760_000_000


def inner_xml(fields: dict[str, str | list[str]]) -> str:
    """A decrypted callback message: ``str`` values become CDATA text, ``list`` values ``<Item>`` children."""
    parts = ["<xml>"]
    for name, value in fields.items():
        if isinstance(value, list):
            items = "".join(f"<Item><![CDATA[{v}]]></Item>" for v in value)
            parts.append(f"<{name}>{items}</{name}>")
        else:
            parts.append(f"<{name}><![CDATA[{value}]]></{name}>")
    parts.append("</xml>")
    return "\n".join(parts)


def contact_event(change_type: str, *, userid: str, external_userid: str, create_time: int = NOW, **extra: str) -> str:
    fields: dict[str, str | list[str]] = {
        "ToUserName": TEST_CORP_ID,
        "FromUserName": "sys",
        "CreateTime": str(create_time),
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": change_type,
        "UserID": userid,
        "ExternalUserID": external_userid,
    }
    fields.update(extra)
    return inner_xml(fields)


@dataclass(frozen=True)
class SignedPost:
    query: dict[str, str]
    body: str


class CallbackSigner:
    """Encrypts and signs callbacks for one receiver, the way WeCom's servers do."""

    def __init__(self, *, token: str = TEST_TOKEN, aes_key: str = TEST_AES_KEY, receive_id: str = TEST_CORP_ID) -> None:
        self.crypto = CallbackCrypto(token, aes_key, receive_id)
        self.receive_id = receive_id

    def post(self, plaintext: str, *, timestamp: int = NOW, nonce: str = "1372623149") -> SignedPost:
        encrypt, signature = self.crypto.encrypt(plaintext, nonce=nonce, timestamp=str(timestamp))
        query = {"msg_signature": signature, "timestamp": str(timestamp), "nonce": nonce}
        return SignedPost(query=query, body=build_post_body(encrypt, self.receive_id, "1000002"))

    def signed_envelope(self, body: str, encrypt: str, *, timestamp: int = NOW, nonce: str = "5") -> SignedPost:
        """An arbitrary outer body whose signature is valid for ``encrypt`` (the test chooses the XML)."""
        signature = self.crypto.signature(str(timestamp), nonce, encrypt)
        return SignedPost(query={"msg_signature": signature, "timestamp": str(timestamp), "nonce": nonce}, body=body)

    def verify_url(self, echo: str, *, timestamp: int = NOW, nonce: str = "263014780") -> dict[str, str]:
        echostr, signature = self.crypto.encrypt(echo, nonce=nonce, timestamp=str(timestamp))
        return {"msg_signature": signature, "timestamp": str(timestamp), "nonce": nonce, "echostr": echostr}
