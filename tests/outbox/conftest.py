"""Fixtures for the outbox tests: the fake WeCom API and its clock (shared with tests/wecom)."""

from __future__ import annotations

from tests.wecom.backends import memory_backend, redis_backend
from tests.wecom.fake_api import clock, fake_wecom, http_session

__all__ = ["clock", "fake_wecom", "http_session", "memory_backend", "redis_backend"]
