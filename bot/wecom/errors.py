"""Typed WeCom errors: every errcode maps to a class that says what to do about it.

- :class:`RetryableError` — try again later (busy, another app sending, task still dispatching, network
  errors, HTTP 5xx).
- :class:`RateLimitedError` — a quota was hit: back off (45009 ≥ 60 s; 45033 with jitter) — also raised
  locally when our own limiter would have to wait longer than the caller allows.
- :class:`TokenError` — the access token is invalid, expired or missing: refresh it and retry once.
- :class:`FatalError` — retrying cannot help (bad secret, no permission, bad ids, quota used up, …). Any
  errcode we do not know is fatal: retrying an unknown refusal is how duplicate sends happen.

Codes come from WeCom's global errcode appendix (全局错误码) and the customer-contact pages cited in
../shared/wecom/PROTOCOL.md. ``errcode`` is ``None`` for failures that never
produced a WeCom answer (network error, timeout, HTTP 5xx, our own limiter).
"""

from __future__ import annotations

from dataclasses import dataclass

from scrm.errors import LianyiError


class WeComError(LianyiError):
    """A WeCom API call failed. ``retry_after`` is a hint in seconds (None = use the caller's backoff)."""

    def __init__(self, errcode: int | None, errmsg: str, api: str, *, retry_after: float | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        self.retry_after = retry_after
        code = "-" if errcode is None else str(errcode)
        super().__init__(f"{api}: errcode={code} {errmsg}")


class RetryableError(WeComError):
    """Transient: the same request may succeed later."""


class RateLimitedError(WeComError):
    """A frequency or concurrency quota was hit; wait at least ``retry_after`` seconds."""


class LimiterRefused(RateLimitedError):
    """Our own rate limiter (a per-API window, or a block after 45009) has no slot before the caller's deadline:
    the call was never sent; ``retry_after`` says when a slot frees up."""


class MemberSlotUnavailable(RateLimitedError):
    """Our own per-member app-message limit has no slot now (nothing was sent, nothing taken); ``api`` names
    the members, ``retry_after`` says when a slot frees up."""


class TokenError(WeComError):
    """The access token is invalid, expired or missing: refresh it and retry once."""


class FatalError(WeComError):
    """Retrying cannot help; the command fails for good."""


class CredentialError(FatalError):
    """gettoken refused the app's credentials (bad secret or CorpID, no permission, untrusted IP).

    Fatal for the call — the client does not ask again for a while — but not the command's fault: the
    dispatcher keeps commands pending until they are dead-lettered, so they can be replayed once the
    configuration is fixed.
    """


@dataclass(frozen=True, slots=True)
class ErrcodeRule:
    error: type[WeComError]
    retry_after: float | None
    meaning: str


# errcode -> what it means for us. Unknown nonzero codes are fatal (see error_for).
ERRCODES: dict[int, ErrcodeRule] = {
    -1: ErrcodeRule(RetryableError, 1.0, "system busy (retry at most a few times)"),
    6000: ErrcodeRule(RetryableError, 1.0, "data version conflict (concurrent edit)"),
    41063: ErrcodeRule(RetryableError, 5.0, "group-send task still dispatching"),
    41096: ErrcodeRule(RetryableError, 1.0, "another app is sending the welcome message"),
    45009: ErrcodeRule(RateLimitedError, 60.0, "API frequency limit (blocked for at least a minute)"),
    45033: ErrcodeRule(RateLimitedError, 2.0, "API concurrency limit (lower concurrency, add jitter)"),
    40014: ErrcodeRule(TokenError, None, "invalid access_token"),
    42001: ErrcodeRule(TokenError, None, "access_token expired"),
    41001: ErrcodeRule(TokenError, None, "access_token missing"),
    40001: ErrcodeRule(FatalError, None, "invalid secret (gettoken)"),
    40013: ErrcodeRule(FatalError, None, "invalid CorpID"),
    48002: ErrcodeRule(FatalError, None, "API not allowed for this app"),
    60020: ErrcodeRule(FatalError, None, "caller IP not in the trusted list"),
    60011: ErrcodeRule(FatalError, None, "no privilege to access this member or contact"),
    84061: ErrcodeRule(FatalError, None, "no customer relationship"),
    41051: ErrcodeRule(FatalError, None, "welcome code already used or the chat already began"),
    41050: ErrcodeRule(FatalError, None, "invalid or expired welcome code"),
    40096: ErrcodeRule(FatalError, None, "invalid external_userid"),
    40068: ErrcodeRule(FatalError, None, "invalid tag id"),
    40126: ErrcodeRule(FatalError, None, "too many corp tags"),
    40128: ErrcodeRule(FatalError, None, "customer transferred too often"),
    40129: ErrcodeRule(FatalError, None, "customer transfer already in progress"),
    81013: ErrcodeRule(FatalError, None, "all recipients invalid"),
    95001: ErrcodeRule(FatalError, None, "customer-service send quota exhausted"),
}

UNKNOWN_ERRCODE = ErrcodeRule(FatalError, None, "unknown errcode")


def rule_for(errcode: int) -> ErrcodeRule:
    return ERRCODES.get(errcode, UNKNOWN_ERRCODE)


def error_for(errcode: int, errmsg: str, api: str) -> WeComError:
    """The typed error for a nonzero errcode returned by ``api``."""
    if errcode == 0:
        raise ValueError("errcode 0 is success, not an error")
    rule = rule_for(errcode)
    return rule.error(errcode, errmsg or rule.meaning, api, retry_after=rule.retry_after)


def transport_error(api: str, reason: str) -> RetryableError:
    """A call that got no WeCom answer (network error, timeout, HTTP 5xx): retryable."""
    return RetryableError(None, reason, api, retry_after=1.0)
