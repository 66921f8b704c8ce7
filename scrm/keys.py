"""Every server key, derived from the one secret key (``LIANYI_SECRET_KEY``) with HKDF-SHA256 and its own label.

A label names what a key is for, so a key made for one purpose never verifies another (a staff token is not a
session cookie, a session cookie is not a tracked link). Nothing is derived from the callback AES key, which
whoever set up the callback has typed into the WeCom admin console.

During a rotation the previous secret key (``LIANYI_SECRET_KEY_PREVIOUS``) still verifies: :meth:`KeyRing.keys`
yields the current key first, then the previous one; :meth:`KeyRing.key` (the current one) signs everything new.

What counts as a secret key (:func:`secret_key_problem`): printable ASCII without spaces, at least 10 distinct
characters, and at least 32 bytes of randomness written out: 64 characters when it is only hex digits (hex carries
4 bits a character), otherwise 43 (base64/base64url carries 6: ``python -c 'import secrets;
print(secrets.token_urlsafe(32))'`` or ``openssl rand -base64 32``).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
MIN_CHARS = 43  # base64 of 32 bytes
MIN_HEX_CHARS = 64  # hex of 32 bytes
MIN_DISTINCT_CHARS = 10
SALT = b"lianyi key derivation v1"


class KeyPurpose(StrEnum):
    """The label each derived key is made with; one per thing signed."""

    STAFF_TOKENS = "staff tokens"
    SESSIONS = "console sessions"
    CSRF = "csrf tokens"
    TRACKED_LINKS = "tracked links"


def secret_key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a secret key (English, for the settings error line), or None when it can."""
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        return "must be printable ASCII without spaces"
    needed = MIN_HEX_CHARS if all(c in string.hexdigits for c in value) else MIN_CHARS
    if len(value) < needed:
        kind = "hex digits" if needed == MIN_HEX_CHARS else "characters"
        return (
            f"is too short: {len(value)} {kind}, at least {needed} needed (32 random bytes); "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if len(set(value)) < MIN_DISTINCT_CHARS:
        return f"has fewer than {MIN_DISTINCT_CHARS} distinct characters (not random)"
    return None


def derive_key(secret_key: str, purpose: KeyPurpose) -> bytes:
    """The key for ``purpose`` made from ``secret_key`` (HKDF-SHA256, 32 bytes)."""
    if not secret_key:
        raise ValueError("the secret key must not be empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=SALT, info=b"lianyi " + purpose.value.encode())
    return hkdf.derive(secret_key.encode("utf-8"))


@dataclass(frozen=True)
class KeyRing:
    """The current secret key and, during a rotation, the previous one."""

    current: str
    previous: str = ""
    _cache: dict[tuple[str, KeyPurpose], bytes] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.current:
            raise ValueError("the secret key must not be empty")

    def _derived(self, secret: str, purpose: KeyPurpose) -> bytes:
        cached = self._cache.get((secret, purpose))
        if cached is None:
            cached = self._cache[(secret, purpose)] = derive_key(secret, purpose)
        return cached

    def key(self, purpose: KeyPurpose) -> bytes:
        """The key that signs new things for ``purpose``."""
        return self._derived(self.current, purpose)

    def keys(self, purpose: KeyPurpose) -> Iterator[bytes]:
        """Every key that verifies for ``purpose``: the current one, then the previous one when set."""
        yield self.key(purpose)
        if self.previous and self.previous != self.current:
            yield self._derived(self.previous, purpose)

    def verifying_keys(self, purpose: KeyPurpose) -> tuple[bytes, ...]:
        return tuple(self.keys(purpose))
