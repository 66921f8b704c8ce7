"""/healthz and /metrics through the real application report the SOP templates' state: a broken folder keeps the
last good templates running, is reported (first problem as file:line:col CODE, the count, which templates run),
and never turns a healthy edge unhealthy (still 200, status ok)."""

from __future__ import annotations

import shutil
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from bot import metrics
from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import Role
from tests.conftest import create_sqlite_database, make_settings

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"


def _gauges() -> tuple[float | None, dict[str, float | None]]:
    problems = metrics.REGISTRY.get_sample_value("lianyi_sop_template_problems")
    running = {
        state: metrics.REGISTRY.get_sample_value("lianyi_sop_templates_running", {"state": state})
        for state in metrics.TEMPLATE_STATES
    }
    return problems, running


async def test_a_broken_template_folder_is_reported_but_the_edge_stays_healthy(tmp_path: Path) -> None:
    folder = tmp_path / "sop"
    shutil.copytree(SHIPPED, folder)
    url = await create_sqlite_database(tmp_path / "health.db")
    app = create_app(make_settings(database_url=url, sop_dir=str(folder)), frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {
            "status": "ok",
            "database": "ok",
            "outbox_unknown": "0",
            "templates": "ok",
            "template_problems": "0",
            "templates_running": "current",
        }
        assert _gauges() == (0.0, {"current": 1.0, "last_good": 0.0, "none": 0.0})

        path = folder / "silent_wakeup.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace("steps:", "stpes:", 1), encoding="utf-8")
        sop = app[RUNTIME_KEY].services.sop
        assert sop is not None
        holder = sop.holder
        holder.reload()  # what the process does by itself within check_every (2 s) of the edit
        (folder / "welcome" / "qr.j2").write_text("您好 {% if contact.name %}\n", encoding="utf-8")
        holder.reload()

        response = await client.get("/healthz")
        body = await response.json()
        assert response.status == 200 and body["status"] == "ok" and body["database"] == "ok"
        assert body["templates"] == "silent_wakeup.yaml:1:1 SOP003"
        assert (body["template_problems"], body["templates_running"]) == ("3", "last_good")
        assert any(p.startswith(f"{folder}/welcome/qr.j2:1:4 SOP010 ") for p in holder.problems)
        scraped = await (await client.get("/metrics")).text()
        assert "lianyi_sop_template_problems 3.0" in scraped
        assert 'lianyi_sop_templates_running{state="last_good"} 1.0' in scraped
        assert "new_customer_nurture" in holder.current().bundles  # the last good templates keep running
