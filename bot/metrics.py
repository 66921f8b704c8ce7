"""Prometheus metrics of the runtime, in one dedicated registry (``REGISTRY``), exposed at ``/metrics``.

Every metric of ``bot`` is declared here so the names stay consistent (prefix ``lianyi_``) and a test can
read a sample with ``REGISTRY.get_sample_value``. Counters take low-cardinality labels only (outcomes,
reasons, kinds — never ids).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# ---- callback edge ----------------------------------------------------------------------------------

CALLBACKS = Counter(
    "lianyi_callbacks",
    "Callback requests by HTTP method and outcome (stored, duplicate, verified, or the refusal reason).",
    ["method", "outcome"],
    registry=REGISTRY,
)
CALLBACK_ACK_SECONDS = Histogram(
    "lianyi_callback_ack_seconds",
    "Time from receiving a callback request to answering it (WeCom allows 1 s for GET, 5 s for POST).",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
CALLBACK_EVENTS = Counter(
    "lianyi_callback_events",
    "Callback events accepted into the inbox, by event type (unknown included).",
    ["event_type"],
    registry=REGISTRY,
)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of :data:`REGISTRY` and its content type (for an HTTP handler)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
