"""Clocks for the emulator: the wall clock, and a manual one tests move by hand.

Everything time-dependent in the emulator (token expiry, the 20 s welcome code, rate windows and blocks,
``CreateTime`` of callbacks) reads one injectable clock, so a test can jump 21 seconds without sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds


class VirtualClock(ManualClock):
    """A manual clock that also answers as an aware UTC datetime, so the emulator and Lianyi's runtime
    (dispatcher, scheduler, SOP ticks) can share it: a test moves one clock by days and both see it."""

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def set(self, when: datetime) -> None:
        """Move forward to ``when`` (never backwards)."""
        self.advance(max(0.0, when.timestamp() - self.now()))
