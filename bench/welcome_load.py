"""Load and measurement of ``bench.welcome_latency``: open-loop add_external_contact callbacks, welcome latency.

* :func:`run_open_loop` sends ``rate × seconds`` callbacks on a fixed schedule whatever Lianyi does (open
  loop: a slow system does not slow the sender down). At each send moment the emulator world action
  ``state.add_contact`` runs — that is when WeCom issues the welcome code, so the code's ``issued_at`` is the
  real event time — and the callback is encrypted, signed and POSTed by :class:`CallbackDriver` (answer
  within 5 s or retried, three attempts, as WeCom does).
* :func:`welcome_latencies` reads the emulator: latency = the moment ``send_welcome_msg`` was accepted −
  the code's ``issued_at``, both on the emulator's system clock.
* :func:`direct_round_trip` measures the floor: one client calling the emulator's ``send_welcome_msg``
  directly, one call at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.emulator.callbacks import CallbackDriver, CallbackResult
from bot.emulator.state import EmulatorState
from scrm.channel import build_state as build_channel_state

CHANNELS = ("qr", "ad", "referral", "event")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(max(values, default=0.0), 1),
        "mean_ms": round(statistics.fmean(values), 1) if values else 0.0,
    }


@dataclass
class SendReport:
    rate: float
    seconds: float
    codes: list[str] = field(default_factory=list)
    schedule_lag_ms: list[float] = field(default_factory=list)  # actual − scheduled send moment
    results: list[CallbackResult] = field(default_factory=list)
    elapsed: float = 0.0  # first scheduled send → last send started

    @property
    def achieved_rate(self) -> float:
        return (len(self.codes) - 1) / self.elapsed if self.elapsed > 0 and len(self.codes) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        acks = [lat * 1000 for r in self.results for lat in r.latencies[:1]]
        return {
            "target_rate": self.rate,
            "seconds": self.seconds,
            "callbacks": len(self.codes),
            "achieved_rate": round(self.achieved_rate, 1),
            "callbacks_failed": sum(1 for r in self.results if not r.ok),
            "callback_retries": sum(r.attempts - 1 for r in self.results),
            "schedule_lag": summary_ms(self.schedule_lag_ms),
            "callback_ack": summary_ms(acks),
        }


def welcome_staff(state: EmulatorState) -> list[str]:
    """Members who get a welcome code with every add (contact permission, no admin welcome)."""
    return sorted(u for u, m in state.staff.items() if m.has_contact_permission and not m.admin_welcome)


async def run_open_loop(
    state: EmulatorState, driver: CallbackDriver, *, rate: float, seconds: float, tag: str
) -> SendReport:
    """Send ``rate × seconds`` add_external_contact callbacks at fixed intervals; returns once all are answered."""
    report = SendReport(rate=rate, seconds=seconds)
    staff = itertools.cycle(welcome_staff(state))
    dealers = itertools.cycle(sorted(state.dealers))
    channels = itertools.cycle(CHANNELS)
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[CallbackResult]] = []
    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        report.schedule_lag_ms.append((loop.time() - due) * 1000)
        channel_state = build_channel_state(channel=next(channels), dealer=next(dealers), campaign=tag)
        fields = state.add_contact(next(staff), state=channel_state)
        report.codes.append(str(fields["WelcomeCode"]))
        tasks.append(loop.create_task(driver.send(fields)))
    report.elapsed = loop.time() - start
    report.results = list(await asyncio.gather(*tasks))
    return report


def welcome_latencies(state: EmulatorState, codes: list[str]) -> tuple[list[float], dict[str, int]]:
    """Latencies (ms) of the welcomes sent for ``codes``, and how the codes ended in the emulator."""
    wanted = set(codes)
    sent_at = {w.code: w.at for w in state.counters.welcomes if w.code in wanted}
    latencies = []
    for code in codes:
        record = state.welcome_codes.get(code)
        if record is not None and code in sent_at:
            latencies.append((sent_at[code] - record.issued_at) * 1000)
    rejected: dict[str, int] = {}
    for code in codes:
        for errcode in state.counters.welcome_rejections.get(code, []):
            rejected[str(errcode)] = rejected.get(str(errcode), 0) + 1
    outcome = {
        "codes_issued": len(codes),
        "welcomes_sent": len(sent_at),
        "sent_twice": sum(1 for c in codes if state.counters.welcome_sends.get(c, 0) > 1),
        **{f"rejected_{k}": v for k, v in sorted(rejected.items())},
    }
    return latencies, outcome


async def direct_round_trip(
    state: EmulatorState, base_url: str, secret: str, *, calls: int, http: aiohttp.ClientSession
) -> list[float]:
    """ms per ``send_welcome_msg`` called directly on the emulator (fresh code each, one at a time)."""
    async with http.get(f"{base_url}/cgi-bin/gettoken", params={"corpid": state.corp_id, "corpsecret": secret}) as r:
        token = (await r.json())["access_token"]
    staff = itertools.cycle(welcome_staff(state))
    url = f"{base_url}/cgi-bin/externalcontact/send_welcome_msg"
    latencies = []
    for _ in range(calls):
        code = str(state.add_contact(next(staff))["WelcomeCode"])
        body = {"welcome_code": code, "text": {"content": "您好，欢迎咨询"}}
        started = time.perf_counter()
        async with http.post(url, params={"access_token": token}, json=body) as response:
            answer = await response.json()
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.get("errcode"):
            raise RuntimeError(f"direct send_welcome_msg failed: {answer}")
    return latencies
