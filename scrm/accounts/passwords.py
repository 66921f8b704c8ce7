"""Password hashing with argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile).

Only hashes are stored. :func:`verify_password` never raises on a malformed hash or a wrong password; it
answers False, and :func:`needs_rehash` says when a stored hash was made with weaker parameters than today's.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from scrm.errors import DomainError

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; a bound keeps a hostile login cheap to refuse

_hasher = PasswordHasher()


class WeakPassword(DomainError):
    """The password is too short or too long (message in Chinese)."""


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"密码至少 {MIN_PASSWORD_CHARS} 个字符")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"密码不能超过 {MAX_PASSWORD_CHARS} 个字符")
    if password.strip() != password or not password.isprintable():
        raise WeakPassword("密码不能以空白开头或结尾，也不能含控制字符")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` after :func:`check_password_strength`."""
    check_password_strength(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; False for an empty or malformed hash."""
    if not stored_hash or len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
