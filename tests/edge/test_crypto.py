"""CallbackCrypto against the official WeCom vectors and wechatpy's fixed-random vector, and its refusals."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.crypto.pkcs7 import PKCS7Encoder

from bot.edge.crypto import (
    BadSignature,
    BadTimestamp,
    CallbackCrypto,
    DecryptFailed,
    FutureTimestamp,
    StaleTimestamp,
    WrongReceiver,
    build_post_body,
    check_timestamp,
)
from bot.edge.xmlparse import parse_xml_fields
from scrm.errors import LianyiError, SettingsError
from tests.edge.wecom_callbacks import VECTORS


def _crypto(vector: dict[str, Any], receive_id: str | None = None) -> CallbackCrypto:
    return CallbackCrypto(vector["token"], vector["encoding_aes_key"], receive_id or vector["corp_id"])


@pytest.mark.parametrize("corp", ["official", "wechatpy_suite"])
def test_verify_url_vectors(corp: str) -> None:
    vector = VECTORS[corp]
    url = vector["verify_url"]
    crypto = _crypto(vector)
    assert crypto.signature(url["timestamp"], url["nonce"], url["echostr"]) == url["msg_signature"]
    assert crypto.check_signature(url["msg_signature"], url["timestamp"], url["nonce"], url["echostr"])
    assert crypto.decrypt(url["echostr"]) == url["expected_reply"]


def test_post_vector_signature_and_plaintext() -> None:
    vector = VECTORS["official"]
    post = vector["post"]
    encrypt = parse_xml_fields(post["body"])["Encrypt"]
    crypto = _crypto(vector)
    assert crypto.check_signature(post["msg_signature"], post["timestamp"], post["nonce"], encrypt)
    assert crypto.decrypt(encrypt) == post["expected_plaintext"]


def test_encrypt_with_fixed_random_matches_vector_exactly() -> None:
    vector = VECTORS["wechatpy_suite"]
    case = vector["encrypt_fixed_random"]
    encrypt, signature = _crypto(vector).encrypt(
        case["plaintext"], nonce=case["nonce"], timestamp=case["timestamp"], random16=case["random16"].encode()
    )
    assert encrypt == case["expected_encrypt"]
    assert signature == case["expected_msg_signature"]


def test_encrypt_then_decrypt_round_trips_unicode() -> None:
    crypto = _crypto(VECTORS["official"])
    text = "<xml><Content><![CDATA[这台车落地多少钱？]]></Content></xml>"
    encrypt, signature = crypto.encrypt(text, nonce="n", timestamp="1")
    assert crypto.check_signature(signature, "1", "n", encrypt)
    assert crypto.decrypt(encrypt) == text


def test_random_prefix_differs_between_encryptions() -> None:
    crypto = _crypto(VECTORS["official"])
    first, _ = crypto.encrypt("same", nonce="n", timestamp="1")
    second, _ = crypto.encrypt("same", nonce="n", timestamp="1")
    assert first != second


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: ("0" if s[0] != "0" else "1") + s[1:],
        lambda s: s[:-1],
        lambda s: s.upper(),
        lambda s: "",
        lambda s: s + "0",
        lambda s: "签名" + s[2:],
    ],
    ids=["one-char", "truncated", "uppercase", "empty", "extended", "non-ascii"],
)
def test_altered_signature_is_refused(tamper: Any) -> None:
    url = VECTORS["official"]["verify_url"]
    crypto = _crypto(VECTORS["official"])
    bad = tamper(url["msg_signature"])
    assert not crypto.check_signature(bad, url["timestamp"], url["nonce"], url["echostr"])
    with pytest.raises(BadSignature):
        crypto.verify(bad, url["timestamp"], url["nonce"], url["echostr"])


def test_signature_covers_every_part() -> None:
    url = VECTORS["official"]["verify_url"]
    crypto = _crypto(VECTORS["official"])
    sig = url["msg_signature"]
    assert not crypto.check_signature(sig, str(int(url["timestamp"]) + 1), url["nonce"], url["echostr"])
    assert not crypto.check_signature(sig, url["timestamp"], url["nonce"] + "1", url["echostr"])
    assert not crypto.check_signature(sig, url["timestamp"], url["nonce"], url["echostr"][:-4] + "AAA=")
    other_token = CallbackCrypto("QDG6eL", VECTORS["official"]["encoding_aes_key"], VECTORS["official"]["corp_id"])
    assert not other_token.check_signature(sig, url["timestamp"], url["nonce"], url["echostr"])


def test_wrong_receiver_is_refused_with_the_id_found() -> None:
    official = VECTORS["official"]
    with pytest.raises(WrongReceiver, match="wx5823bf96d3bd56c7") as info:
        _crypto(official, receive_id="wwSomeOtherCorp").decrypt(official["verify_url"]["echostr"])
    assert isinstance(info.value, LianyiError)


@pytest.mark.parametrize(
    ("ciphertext", "message"),
    [
        ("not base64 at all!", "base64"),
        (base64.b64encode(b"12345").decode(), "multiple of 16"),
        ("", "multiple of 16"),
        (base64.b64encode(bytes(range(64))).decode(), "padding"),
    ],
    ids=["not-base64", "short", "empty", "garbage-blocks"],
)
def test_undecryptable_input_is_decrypt_failed(ciphertext: str, message: str) -> None:
    with pytest.raises(DecryptFailed, match=message):
        _crypto(VECTORS["official"]).decrypt(ciphertext)


def test_ciphertext_under_another_key_is_decrypt_failed() -> None:
    suite = VECTORS["wechatpy_suite"]
    encrypt = suite["encrypt_fixed_random"]["expected_encrypt"]
    with pytest.raises(DecryptFailed, match="padding"):
        _crypto(VECTORS["official"]).decrypt(encrypt)


def test_encrypt_refuses_a_random_prefix_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        _crypto(VECTORS["official"]).encrypt("x", nonce="n", timestamp="1", random16=b"short")


def test_build_post_body_is_the_documented_envelope() -> None:
    body = build_post_body("QUJD", "wx5823bf96d3bd56c7", "218")
    assert body == (
        "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><AgentID><![CDATA[218]]></AgentID>"
        "<Encrypt><![CDATA[QUJD]]></Encrypt></xml>"
    )
    assert parse_xml_fields(body) == {"ToUserName": "wx5823bf96d3bd56c7", "AgentID": "218", "Encrypt": "QUJD"}


class TestTimestampWindow:
    def test_inside_window_both_directions(self) -> None:
        assert check_timestamp("1000", now=1300, max_age=300) == 1000
        assert check_timestamp("1600", now=1300, max_age=300) == 1600

    def test_stale(self) -> None:
        with pytest.raises(StaleTimestamp, match="301 s old"):
            check_timestamp("999", now=1300, max_age=300)

    def test_future(self) -> None:
        with pytest.raises(FutureTimestamp, match="301 s in the future"):
            check_timestamp("1601", now=1300, max_age=300)

    def test_zero_turns_the_window_off(self) -> None:
        assert check_timestamp("1409659589", now=1_900_000_000, max_age=0) == 1409659589

    @pytest.mark.parametrize("raw", ["", "abc", "1.5", "0x10"])
    def test_not_an_integer(self, raw: str) -> None:
        with pytest.raises(BadTimestamp):
            check_timestamp(raw, now=1300, max_age=300)


def _encrypt_raw(packed: bytes) -> str:
    """AES-encrypt an arbitrary plaintext layout under the official key (to forge malformed layouts)."""
    key = base64.b64decode(VECTORS["official"]["encoding_aes_key"] + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(PKCS7Encoder.encode(packed)) + encryptor.finalize()).decode()


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (b"r" * 16 + struct.pack(">I", 9999) + b"<xml/>" + b"wx5823bf96d3bd56c7", "length prefix 9999"),
        (b"r" * 16 + struct.pack(">I", 2) + b"\xff\xfe" + b"wx5823bf96d3bd56c7", "not UTF-8"),
        (b"r" * 16 + b"\x00", "too short"),
    ],
    ids=["length-beyond-data", "not-utf8", "no-length-prefix"],
)
def test_malformed_plaintext_layout_is_decrypt_failed(packed: bytes, message: str) -> None:
    with pytest.raises(DecryptFailed, match=message):
        _crypto(VECTORS["official"]).decrypt(_encrypt_raw(packed))


@pytest.mark.parametrize("key", ["short", "!" * 43], ids=["wrong-length", "not-base64"])
def test_a_malformed_aes_key_is_a_settings_error(key: str) -> None:
    with pytest.raises(SettingsError, match="EncodingAESKey"):
        CallbackCrypto("token", key, "wx5823bf96d3bd56c7")
