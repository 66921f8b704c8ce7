"""Fixtures for the WeCom client tests: the fake API, a fake clock, and both backend kinds."""

from __future__ import annotations

from tests.wecom.backends import backend, memory_backend, redis_backend
from tests.wecom.fake_api import clock, fake_wecom, http_session

__all__ = ["backend", "clock", "fake_wecom", "http_session", "memory_backend", "redis_backend"]
