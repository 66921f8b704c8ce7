"""WeCom's frequency limits as the emulator enforces them.

- Per corp per API (90454): ≤10,000 calls a minute and ≤150,000 an hour by default, configurable per API
  path. Crossing a limit answers 45009 and blocks that API for 60 s (minute limit) or 60 min (hour limit).
- App messages (message/send, 90236): each member receives ≤30 a minute and ≤1000 an hour; anything
  beyond is **silently dropped** (the API still answers errcode 0). Only delivered messages fill the windows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MINUTE = 60.0
HOUR = 3600.0


def _trim(window: deque[float], now: float, span: float) -> None:
    while window and window[0] <= now - span:
        window.popleft()


@dataclass(slots=True)
class _ApiWindow:
    minute: deque[float] = field(default_factory=deque)
    hour: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class ApiRateLimiter:
    """Sliding-window call limits per API path, with WeCom's blocks once a limit is crossed."""

    def __init__(self, per_minute: int = 10_000, per_hour: int = 150_000) -> None:
        self.default_per_minute = per_minute
        self.default_per_hour = per_hour
        self.per_minute: dict[str, int] = {}
        self.per_hour: dict[str, int] = {}
        self.minute_block = MINUTE
        self.hour_block = HOUR
        self._windows: dict[str, _ApiWindow] = {}

    def set_limit(self, api: str, *, per_minute: int | None = None, per_hour: int | None = None) -> None:
        if per_minute is not None:
            self.per_minute[api] = per_minute
        if per_hour is not None:
            self.per_hour[api] = per_hour

    def allow(self, api: str, now: float) -> bool:
        """Record one call; False (→ 45009) while the API is blocked or when this call crosses a limit."""
        window = self._windows.setdefault(api, _ApiWindow())
        if now < window.blocked_until:
            return False
        _trim(window.minute, now, MINUTE)
        _trim(window.hour, now, HOUR)
        if len(window.minute) >= self.per_minute.get(api, self.default_per_minute):
            window.blocked_until = now + self.minute_block
            return False
        if len(window.hour) >= self.per_hour.get(api, self.default_per_hour):
            window.blocked_until = now + self.hour_block
            return False
        window.minute.append(now)
        window.hour.append(now)
        return True

    def blocked_until(self, api: str) -> float:
        window = self._windows.get(api)
        return window.blocked_until if window else 0.0


class MemberMessageQuota:
    """App messages per receiving member; :meth:`admit` says whether WeCom would deliver one more."""

    def __init__(self, per_minute: int = 30, per_hour: int = 1000) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._minute: dict[str, deque[float]] = {}
        self._hour: dict[str, deque[float]] = {}

    def admit(self, userid: str, now: float) -> bool:
        minute = self._minute.setdefault(userid, deque())
        hour = self._hour.setdefault(userid, deque())
        _trim(minute, now, MINUTE)
        _trim(hour, now, HOUR)
        if len(minute) >= self.per_minute or len(hour) >= self.per_hour:
            return False
        minute.append(now)
        hour.append(now)
        return True
