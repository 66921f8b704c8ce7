"""``/healthz`` (each dependency's state; 503 when one is broken) and ``/metrics`` (Prometheus text format).

The SOP templates are reported too (:func:`template_status`: ``templates`` is ``ok`` or the first problem as
``file:line:col CODE``, with ``template_problems`` and ``templates_running``) but they never make the process
unhealthy: a template typo keeps the last good templates running and must not take a healthy callback edge
out of a load balancer, so /healthz stays 200 and ``status`` stays ``ok``. Alert on the
``lianyi_sop_template_problems`` gauge instead. ``outbox_unknown`` (informational too) counts the outbox commands
that ended ``unknown`` (``lianyi deadletter unknown`` lists them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlmodel import func, select

from bot import metrics
from scrm.db import SessionFactory
from scrm.models import CommandStatus, OutboxCommand
from scrm.sop.catalog import CatalogHolder

HealthProbe = Callable[[], Awaitable[dict[str, str]]]
# never "degraded"
INFORMATIONAL = frozenset({"templates", "template_problems", "templates_running", "outbox_unknown"})


def template_status(holder: CatalogHolder) -> dict[str, str]:
    """The templates' part of /healthz."""
    health = holder.health()
    return {
        "templates": health.first or "ok",
        "template_problems": str(health.problems),
        "templates_running": health.running,
    }


async def count_unknown_outcomes(sessions: SessionFactory) -> int:
    """Outbox commands ended ``unknown``: a call may have reached WeCom and nothing could tell (/healthz)."""
    async with sessions() as session:
        query = select(func.count()).select_from(OutboxCommand).where(OutboxCommand.status == CommandStatus.UNKNOWN)
        return int((await session.exec(query)).one())


def watch_templates(holder: CatalogHolder) -> None:
    """Let the template gauges of /metrics read ``holder`` at every scrape (the last runtime started wins)."""
    metrics.TEMPLATE_PROBLEMS.set_function(lambda: holder.health().problems)

    def running(state: str) -> Callable[[], float]:
        return lambda: 1.0 if holder.health().running == state else 0.0

    for state in metrics.TEMPLATE_STATES:
        metrics.TEMPLATES_RUNNING.labels(state=state).set_function(running(state))


def add_health_routes(app: web.Application, probe: HealthProbe) -> None:
    async def healthz(request: web.Request) -> web.Response:
        status = await probe()
        ok = all(v in {"ok", "yes", "no"} for k, v in status.items() if k not in INFORMATIONAL)
        return web.json_response({"status": "ok" if ok else "degraded", **status}, status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
