"""Fault injection: what a bad day at WeCom looks like, made repeatable.

- ``set_error_rate(api, p)``: each call of ``api`` (or of every API with ``"*"``) answers ``-1`` (系统繁忙)
  with probability ``p``, drawn from a seeded RNG so statistics are reproducible.
- ``burst(api, count, errcode=45009)``: the next ``count`` calls answer ``errcode`` (scripted bursts).
- ``latency`` / ``jitter``: every response waits ``latency + uniform(0, jitter)`` seconds.
- Invalidating all tokens lives on the state (:meth:`EmulatorState.invalidate_all_tokens`).
"""

from __future__ import annotations

import random
from collections import deque

ERR_BUSY = -1
ERR_FREQUENCY = 45009
ANY_API = "*"


class FaultPlan:
    def __init__(self, seed: int | None = 0) -> None:
        self._rng = random.Random(seed)
        self.error_rate: dict[str, float] = {}
        self.latency = 0.0
        self.jitter = 0.0
        self._bursts: dict[str, deque[int]] = {}

    def set_error_rate(self, api: str, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], got {probability}")
        self.error_rate[api] = probability

    def burst(self, api: str = ANY_API, count: int = 1, errcode: int = ERR_FREQUENCY) -> None:
        self._bursts.setdefault(api, deque()).extend([errcode] * count)

    def set_latency(self, fixed: float, jitter: float = 0.0) -> None:
        if fixed < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        self.latency, self.jitter = fixed, jitter

    def delay(self) -> float:
        if self.jitter:
            return self.latency + self._rng.uniform(0.0, self.jitter)
        return self.latency

    def pending_burst(self, api: str) -> int:
        return len(self._bursts.get(api, ())) + (len(self._bursts.get(ANY_API, ())) if api != ANY_API else 0)

    def pick(self, api: str) -> int | None:
        """The errcode to inject into this call of ``api``, or None to let it through."""
        for key in (api, ANY_API):
            queue = self._bursts.get(key)
            if queue:
                return queue.popleft()
        rate = self.error_rate.get(api, self.error_rate.get(ANY_API, 0.0))
        if rate and self._rng.random() < rate:
            return ERR_BUSY
        return None

    def clear(self) -> None:
        self.error_rate.clear()
        self._bursts.clear()
        self.latency = self.jitter = 0.0
