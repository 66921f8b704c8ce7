"""WeCom callback crypto: signatures, the timestamp window, AES decrypt/encrypt with a receiver-id check.

The AES-256-CBC and PKCS#7 (block 32) machinery is wechatpy's (``wechatpy.work.crypto.PrpCrypto``, pinned
2.0.0a26). What wechatpy does not do, we add here: the signature is compared in constant time, the
timestamp must be inside a window, and every failure is one of our typed errors, so the edge can map it to
an HTTP status through a table instead of catching third-party exceptions.

Layout of the plaintext (PROTOCOL.md, doc 91144): random(16) + len(msg) as 4-byte big-endian + msg +
receive id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

from wechatpy.crypto.pkcs7 import PKCS7Encoder
from wechatpy.work.crypto import PrpCrypto

from scrm.errors import LianyiError, SettingsError

_AES_BLOCK = 16
_RANDOM_LEN = 16
# The valid PKCS#7 tails (block 32), indexed by the pad byte; index 0 is never valid.
_PADDINGS = [b""] + [bytes([n]) * n for n in range(1, PKCS7Encoder.block_size + 1)]


class CallbackRejected(LianyiError):
    """A callback failed verification. ``reason`` is a short stable code used in logs and metrics."""

    reason = "rejected"


class BadSignature(CallbackRejected):
    """msg_signature does not match sha1(sort(token, timestamp, nonce, data))."""

    reason = "bad_signature"


class StaleTimestamp(CallbackRejected):
    """The signed timestamp lags behind our clock by more than the allowed window."""

    reason = "stale_timestamp"


class FutureTimestamp(CallbackRejected):
    """The signed timestamp is ahead of our clock by more than the allowed window."""

    reason = "future_timestamp"


class BadTimestamp(CallbackRejected):
    """The timestamp is not an integer number of seconds."""

    reason = "bad_timestamp"


class WrongReceiver(CallbackRejected):
    """The message decrypted, but it was encrypted for another receiver (CorpID / suite id)."""

    reason = "wrong_receiver"


class DecryptFailed(CallbackRejected):
    """The ciphertext is not base64, not whole AES blocks, or does not unpack into the documented layout."""

    reason = "decrypt_failed"


def check_timestamp(timestamp: str, *, now: float, max_age: int) -> int:
    """Return the timestamp as int; raise if it is outside ``now ± max_age`` (``max_age == 0``: no window)."""
    try:
        value = int(timestamp)
    except ValueError:
        raise BadTimestamp(f"timestamp {timestamp[:32]!r} is not an integer") from None
    if max_age <= 0:
        return value
    skew = now - value
    if skew > max_age:
        raise StaleTimestamp(f"timestamp {value} is {int(skew)} s old (window {max_age} s)")
    if -skew > max_age:
        raise FutureTimestamp(f"timestamp {value} is {int(-skew)} s in the future (window {max_age} s)")
    return value


class CallbackCrypto:
    """Signature and AES for one receiver (the CorpID of a self-built app, a suite id, or "")."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error:
            raise SettingsError("EncodingAESKey is not base64") from None
        if len(key) != 32:
            raise SettingsError(f"EncodingAESKey decodes to {len(key)} bytes, expected 32")
        self._token = token
        self._key = key
        self._receive_id = receive_id
        self._receive_id_bytes = receive_id.encode("utf-8")
        self._prp = PrpCrypto(key)

    @property
    def receive_id(self) -> str:
        return self._receive_id

    # ---- signatures ---------------------------------------------------------------------------------

    def signature(self, timestamp: str, nonce: str, data: str) -> str:
        """sha1 hex of the token, timestamp, nonce and data, sorted and concatenated."""
        parts = sorted(p.encode("utf-8") for p in (self._token, timestamp, nonce, data))
        return hashlib.sha1(b"".join(parts)).hexdigest()

    def check_signature(self, sig: str, timestamp: str, nonce: str, data: str) -> bool:
        """Constant-time comparison of ``sig`` with the expected signature."""
        expected = self.signature(timestamp, nonce, data)
        return hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8"))

    def verify(self, sig: str, timestamp: str, nonce: str, data: str) -> None:
        """Raise :class:`BadSignature` unless ``sig`` matches."""
        if not self.check_signature(sig, timestamp, nonce, data):
            raise BadSignature("msg_signature does not match")

    # ---- AES ----------------------------------------------------------------------------------------

    def decrypt(self, encrypt_b64: str) -> str:
        """Decrypt and return the message; the embedded receive id must be ours.

        One base64 decode and one AES pass (wechatpy's ``PrpCrypto.decrypt`` would decode and decrypt again
        after our structure checks, and it slices garbage silently, so we unpack the layout ourselves).
        """
        try:
            raw = base64.b64decode(encrypt_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DecryptFailed("ciphertext is not valid base64") from None
        if not raw or len(raw) % _AES_BLOCK:
            raise DecryptFailed(f"ciphertext is {len(raw)} bytes, not a positive multiple of {_AES_BLOCK}")
        plain: bytes = self._prp.cipher.decrypt(raw)
        pad = plain[-1]
        if not 1 <= pad <= PKCS7Encoder.block_size or not plain.endswith(_PADDINGS[pad]):
            raise DecryptFailed("bad PKCS#7 padding (wrong key or corrupted ciphertext)")
        end = len(plain) - pad
        if end - _RANDOM_LEN < 4:
            raise DecryptFailed("plaintext too short for the length prefix")
        msg_start = _RANDOM_LEN + 4
        msg_end = msg_start + int.from_bytes(plain[_RANDOM_LEN:msg_start], "big")
        if msg_end > end:
            raise DecryptFailed(f"length prefix {msg_end - msg_start} exceeds the {end - msg_start} bytes present")
        try:
            message = plain[msg_start:msg_end].decode("utf-8")
            receive_id = plain[msg_end:end]
            if receive_id != self._receive_id_bytes:
                raise WrongReceiver(f"receive id {receive_id.decode('utf-8')[:64]!r} is not {self._receive_id!r}")
        except UnicodeDecodeError:
            raise DecryptFailed("message is not UTF-8") from None
        return message

    def encrypt(self, plaintext: str, *, nonce: str, timestamp: str, random16: bytes | None = None) -> tuple[str, str]:
        """Encrypt ``plaintext`` for our receive id; return (base64 ciphertext, msg_signature)."""
        rand = secrets.token_bytes(_RANDOM_LEN) if random16 is None else random16
        if len(rand) != _RANDOM_LEN:
            raise ValueError(f"random16 must be {_RANDOM_LEN} bytes, got {len(rand)}")
        msg = plaintext.encode("utf-8")
        packed = rand + struct.pack(">I", len(msg)) + msg + self._receive_id.encode("utf-8")
        padded = PKCS7Encoder.encode(packed)
        encrypt_b64 = base64.b64encode(self._prp.cipher.encrypt(padded)).decode("ascii")
        return encrypt_b64, self.signature(timestamp, nonce, encrypt_b64)


def build_post_body(encrypt_b64: str, to_user: str, agent_id: str = "") -> str:
    """The outer XML of a callback POST, as WeCom sends it."""
    for value in (encrypt_b64, to_user, agent_id):
        if "]]>" in value:
            raise ValueError("a CDATA value cannot contain ']]>'")
    return (
        f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName>"
        f"<AgentID><![CDATA[{agent_id}]]></AgentID>"
        f"<Encrypt><![CDATA[{encrypt_b64}]]></Encrypt></xml>"
    )
