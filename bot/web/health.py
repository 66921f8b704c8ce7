"""``/healthz`` (each dependency's state; 503 when one is broken) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import metrics

HealthProbe = Callable[[], Awaitable[dict[str, str]]]


def add_health_routes(app: web.Application, probe: HealthProbe) -> None:
    async def healthz(request: web.Request) -> web.Response:
        status = await probe()
        ok = all(v in {"ok", "yes", "no"} for v in status.values())
        return web.json_response({"status": "ok" if ok else "degraded", **status}, status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
