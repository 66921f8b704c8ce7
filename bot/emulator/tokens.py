"""Access tokens (one per app secret) and welcome codes (valid once, for 20 s).

Errcodes (PROTOCOL.md, 90313 appendix; send_welcome_msg page 92599):

- gettoken with an unknown secret → 40001; a token that never existed or was invalidated early → 40014;
  a token past ``expires_in`` → 42001; no ``access_token`` at all → 41001 (checked by the API layer).
- gettoken while the secret's token is still valid returns the same token with the seconds it has left,
  as WeCom does ("有效期内重复获取返回相同结果").
- send_welcome_msg: a second use of a code → 41051 (documented: "externaluser has started chatting").
  A code the emulator never issued → 41050. The docs say only "within 20 s of the event, once" and do
  not name the errcode for a late call; we answer 41051 by default (do-not-retry, the safe reading) and
  ``WelcomeCodes.expired_errcode`` can be set to 41050 to exercise the other branch.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

ERR_BAD_SECRET = 40001
ERR_INVALID_TOKEN = 40014
ERR_EXPIRED_TOKEN = 42001
ERR_WELCOME_USED = 41051
ERR_WELCOME_INVALID = 41050

TOKEN_TTL = 7200
WELCOME_TTL = 20.0


@dataclass(slots=True)
class IssuedToken:
    token: str
    secret: str
    expires_at: float
    revoked: bool = False


class TokenStore:
    """Tokens keyed by value; at most one live token per secret."""

    def __init__(self, corp_id: str, ttl: int = TOKEN_TTL) -> None:
        self._corp_id = corp_id
        self.ttl = ttl
        self._by_token: dict[str, IssuedToken] = {}
        self._current: dict[str, IssuedToken] = {}
        self._serial = itertools.count(1)
        self.issued = 0

    def issue(self, secret: str, now: float) -> tuple[str, int]:
        """The secret's live token (and its remaining seconds), or a fresh one."""
        current = self._current.get(secret)
        if current is not None and not current.revoked and current.expires_at > now:
            return current.token, int(current.expires_at - now)
        seed = f"{self._corp_id}:{secret}:{next(self._serial)}".encode()
        token = "emu_" + hashlib.sha256(seed).hexdigest()[:48]
        record = IssuedToken(token=token, secret=secret, expires_at=now + self.ttl)
        self._by_token[token] = record
        self._current[secret] = record
        self.issued += 1
        return token, self.ttl

    def check(self, token: str, now: float) -> tuple[int, str]:
        """``(0, secret)`` for a usable token, else ``(errcode, "")``."""
        record = self._by_token.get(token)
        if record is None or record.revoked:
            return ERR_INVALID_TOKEN, ""
        if record.expires_at <= now:
            return ERR_EXPIRED_TOKEN, ""
        return 0, record.secret

    def invalidate_all(self, now: float) -> int:
        """Revoke every token now (WeCom may invalidate early); returns how many were still live."""
        live = 0
        for record in self._by_token.values():
            if not record.revoked and record.expires_at > now:
                live += 1
            record.revoked = True
        return live


@dataclass(slots=True)
class WelcomeCode:
    code: str
    userid: str
    external_userid: str
    issued_at: float
    used: bool = False


class WelcomeCodes:
    """The codes handed out with add events; each may be used once within ``ttl`` seconds."""

    def __init__(self, corp_id: str, ttl: float = WELCOME_TTL) -> None:
        self._corp_id = corp_id
        self.ttl = ttl
        self.expired_errcode = ERR_WELCOME_USED
        self._codes: dict[str, WelcomeCode] = {}
        self._serial = itertools.count(1)

    def issue(self, userid: str, external_userid: str, now: float) -> str:
        seed = f"{self._corp_id}:welcome:{next(self._serial)}".encode()
        code = "WC" + hashlib.sha256(seed).hexdigest()[:40].upper()
        self._codes[code] = WelcomeCode(code, userid, external_userid, now)
        return code

    def get(self, code: str) -> WelcomeCode | None:
        return self._codes.get(code)

    def all(self) -> list[WelcomeCode]:
        """Every code handed out so far (reports compare them with the sends)."""
        return list(self._codes.values())

    def use(self, code: str, now: float) -> int:
        """Consume a code; 0 when the welcome may be sent, else the errcode WeCom answers."""
        record = self._codes.get(code)
        if record is None:
            return ERR_WELCOME_INVALID
        if record.used:
            return ERR_WELCOME_USED
        if now - record.issued_at > self.ttl:
            return self.expired_errcode
        record.used = True
        return 0
