"""Prometheus metrics of the runtime, in one dedicated registry (``REGISTRY``), exposed at ``/metrics``.

Every metric of ``bot`` is declared here so the names stay consistent (prefix ``lianyi_``) and a test can
read a sample with ``REGISTRY.get_sample_value``. Counters take low-cardinality labels only (outcomes,
reasons, kinds — never ids).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

# ---- worker -----------------------------------------------------------------------------------------

INBOX_HANDLED = Counter(
    "lianyi_inbox_handled",
    "Inbox deliveries by event type and outcome (ok, retry, dead).",
    ["event_type", "outcome"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "lianyi_handler_seconds",
    "Time the router spent on one event (all its handlers, their transactions included).",
    ["event_type"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)

# ---- outbox -----------------------------------------------------------------------------------------

OUTBOX_FINISHED = Counter(
    "lianyi_outbox_finished",
    "Outbox commands that reached a final state, by kind and status (done, failed, expired, dead).",
    ["kind", "status"],
    registry=REGISTRY,
)
OUTBOX_RETRIES = Counter(
    "lianyi_outbox_retries",
    "Outbox command attempts that will be retried, by kind and errcode (none for network errors).",
    ["kind", "errcode"],
    registry=REGISTRY,
)
OUTBOX_COMMAND_AGE_SECONDS = Histogram(
    "lianyi_outbox_command_age_seconds",
    "From a command's creation to its final state, by kind (a welcome must finish within 20 s).",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0, 300.0),
    registry=REGISTRY,
)

# ---- campaigns --------------------------------------------------------------------------------------

CAMPAIGN_TARGETS = Counter(
    "lianyi_campaign_targets",
    "Targets of campaign runs the leader planned, by outcome (planned or skipped; reasons in the report).",
    ["outcome"],
    registry=REGISTRY,
)
CAMPAIGN_TRACKING = Counter(
    "lianyi_campaign_tracking",
    "Tracking actions on group-send tasks (confirmed, results, reminded, cancelled, given_up, error).",
    ["action"],
    registry=REGISTRY,
)


# ---- SOP templates ----------------------------------------------------------------------------------

TEMPLATE_PROBLEMS = Gauge(
    "lianyi_sop_template_problems",
    "Problems of the SOP folder right now (0: the folder runs as it is; see /healthz for the first one).",
    registry=REGISTRY,
)
TEMPLATES_RUNNING = Gauge(
    "lianyi_sop_templates_running",
    "1 for the templates this process runs: current (the folder as it is), last_good (the folder has problems, "
    "the last good templates keep running) or none (nothing good was ever loaded: no SOP starts).",
    ["state"],
    registry=REGISTRY,
)
TEMPLATE_STATES = ("current", "last_good", "none")


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of :data:`REGISTRY` and its content type (for an HTTP handler)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
