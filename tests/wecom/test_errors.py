"""The errcode registry: every code maps to the class that says what to do."""

from __future__ import annotations

import pytest

from bot.wecom.errors import (
    ERRCODES,
    FatalError,
    RateLimitedError,
    RetryableError,
    TokenError,
    error_for,
    transport_error,
)


def test_backoff_hints_follow_the_docs() -> None:
    frequency = error_for(45009, "api freq out of limit", "/cgi-bin/message/send")
    assert isinstance(frequency, RateLimitedError)
    assert frequency.retry_after is not None and frequency.retry_after >= 60
    concurrency = error_for(45033, "api concurrent out of limit", "/x")
    assert isinstance(concurrency, RateLimitedError) and concurrency.retry_after
    assert error_for(-1, "system busy", "/x").retry_after


@pytest.mark.parametrize(
    ("errcode", "expected"),
    [(40014, TokenError), (42001, TokenError), (41001, TokenError), (40001, FatalError), (41096, RetryableError)],
)
def test_registry_classes(errcode: int, expected: type) -> None:
    assert ERRCODES[errcode].error is expected
    error = error_for(errcode, "", "/x")
    assert type(error) is expected
    assert error.errmsg == ERRCODES[errcode].meaning  # an empty errmsg is replaced by what the code means


def test_unknown_errcode_is_fatal_and_keeps_the_message() -> None:
    error = error_for(123456, "something new", "/cgi-bin/x")
    assert type(error) is FatalError
    assert str(error) == "/cgi-bin/x: errcode=123456 something new"


def test_zero_is_not_an_error() -> None:
    with pytest.raises(ValueError):
        error_for(0, "ok", "/x")


def test_transport_errors_have_no_errcode() -> None:
    error = transport_error("/x", "HTTP 502")
    assert isinstance(error, RetryableError) and error.errcode is None
    assert str(error) == "/x: errcode=- HTTP 502"
