"""Hot reload off the event loop: a process reloads its SOP folder in a worker thread, so /healthz answers while a
reload is in progress (proved by ordering: the reload is held inside the folder until the test lets it go), and a
hostile template keeps the last good catalog running."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.runtime.app import RUNTIME_KEY, create_app
from bot.runtime.assembly import Role
from bot.runtime.sop_wiring import load_templates, reload_templates
from bot.web.health import add_health_routes, template_status
from scrm.sop.catalog import CatalogHolder
from tests.conftest import create_sqlite_database, make_settings

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
HOSTILE = f"""\
id: hostile
name: 恶意模板
kind: contact
trigger:
  event: contact.added
steps:
  - immediately: true
    private_message:
      text: "{NESTED}"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "sop"
    shutil.copytree(SHIPPED, target)
    return target


class Gate:
    """A FIFO posing as a message file (a partial of ``welcome/``): a reload reading it waits until :meth:`release`.
    A safety valve releases it after a minute, so a reload that wrongly ran on the event loop fails the test instead
    of hanging it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.released = threading.Event()
        self._writer: int | None = None
        threading.Thread(target=self._valve, daemon=True).start()

    def _open_writer(self) -> int | None:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # fails (ENXIO) until a reader has it open
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            return None

    def _valve(self) -> None:
        if self.released.wait(60):
            return
        while (fd := self._open_writer()) is None and not self.released.is_set():
            self.released.wait(0.05)
        if fd is not None:
            os.close(fd)

    async def reader_waiting(self) -> None:
        """Return once a reload has the gate open (it is inside ``load_folder``, waiting for the file's text)."""
        for _ in range(6000):
            self._writer = self._open_writer()
            if self._writer is not None:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no reload ever opened the gate")

    def release(self) -> None:
        """The reload reads an empty partial (harmless) and goes on."""
        self.released.set()
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None


async def test_healthz_answers_while_a_reload_is_held_in_a_worker_thread(folder: Path) -> None:
    holder = CatalogHolder(folder, check_every=0.01)
    await load_templates(holder)
    good = holder.current()
    assert good.ok and holder.problems == []

    async def probe() -> dict[str, str]:
        return template_status(holder)

    app = web.Application()
    add_health_routes(app, probe)
    (folder / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    gate = Gate(folder / "welcome" / "_gate.j2")
    stop = asyncio.Event()
    watcher = asyncio.create_task(reload_templates(holder, stop))
    try:
        async with TestClient(TestServer(app)) as client:
            await gate.reader_waiting()  # a reload started by the watcher is now blocked reading the folder
            response = await client.get("/healthz")
            assert response.status == 200
            body = await response.json()
            assert (body["templates"], body["templates_running"]) == ("ok", "current")  # the reload is not done
            assert holder.current() is good and not watcher.done()
            stop.set()  # no further reload after the one in flight
            gate.release()
            await watcher
    finally:
        stop.set()
        gate.release()
    assert holder.current() is good  # the hostile template keeps the last good catalog running
    [problem] = holder.problems
    assert problem.startswith(f"{folder / 'hostile.yaml'}:9:13 SOP029 ")


async def test_a_hostile_template_during_hot_reload_keeps_the_good_catalog(folder: Path) -> None:
    holder = CatalogHolder(folder)
    await load_templates(holder)
    good = holder.current()
    (folder / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    assert await holder.refresh() is False
    assert holder.current() is good and "hostile" not in good.bundles
    [problem] = holder.problems
    assert problem.startswith(f"{folder / 'hostile.yaml'}:9:13 SOP029 模板执行步数超过上限")
    assert holder.health().running == "last_good"
    (folder / "hostile.yaml").unlink()
    assert await holder.refresh() is True
    assert holder.current().generation == good.generation + 1 and holder.problems == []


async def test_a_watched_holder_never_reloads_on_the_caller(folder: Path) -> None:
    holder = CatalogHolder(folder, check_every=0.0)
    await load_templates(holder)
    good = holder.current()
    (folder / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    assert holder.current() is good and holder.health().problems == 0  # only refresh() looks at the folder
    await holder.refresh()
    assert holder.health().problems == 1


async def test_the_running_process_loads_and_watches_its_templates_off_the_loop(folder: Path, tmp_path: Path) -> None:
    url = await create_sqlite_database(tmp_path / "reload.db")
    app = create_app(make_settings(database_url=url, sop_dir=str(folder)), frozenset({Role.EDGE}))
    async with TestClient(TestServer(app)) as client:
        sop = app[RUNTIME_KEY].services.sop
        assert sop is not None
        assert sop.holder.reloads_in_background
        assert sop.holder.current().generation == 1  # loaded during start, before the first request
        response = await client.get("/healthz")
        assert (await response.json())["templates_running"] == "current"
