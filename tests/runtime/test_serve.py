"""`lianyi serve` as an operator runs it: settings errors, migrations on a fresh SQLite file, /healthz, /metrics."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from bot import metrics
from bot.emulator.demo import run_demo_loop
from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import load_scenario
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN, create_sqlite_database

LIANYI = Path(sys.executable).with_name("lianyi")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update(
        {
            "LIANYI_CORP_ID": TEST_CORP_ID,
            "LIANYI_CALLBACK_TOKEN": TEST_TOKEN,
            "LIANYI_CALLBACK_AES_KEY": TEST_AES_KEY,
            "LIANYI_SECRET_KEY": TEST_SECRET_KEY,
            "LIANYI_LOG_JSON": "true",
        }
    )
    env.update(values)
    return env


async def _run(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_malformed_setting_stops_the_start_with_one_line(tmp_path: Path) -> None:
    code, out, err = await _run("serve", env=_env(LIANYI_CALLBACK_AES_KEY=TEST_AES_KEY[:-1]), cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines() == ["error: LIANYI_CALLBACK_AES_KEY must be 43 characters (got 42)"]
    assert out == ""


async def test_missing_setting_is_named(tmp_path: Path) -> None:
    env = _env()
    del env["LIANYI_CORP_ID"]
    code, _, err = await _run("serve", env=env, cwd=tmp_path)
    assert code == 2
    assert err.strip() == "error: LIANYI_CORP_ID is required but not set"


@pytest.mark.parametrize(
    ("secret_key", "line"),
    [
        (None, "error: LIANYI_SECRET_KEY is required but not set"),
        ("short", "error: LIANYI_SECRET_KEY is too short: 5 characters, at least 43 needed (32 random bytes); "),
        (TEST_AES_KEY, "error: LIANYI_SECRET_KEY must not equal LIANYI_CALLBACK_AES_KEY: generate a key of its own"),
    ],
)
async def test_serve_refuses_a_missing_or_weak_secret_key_in_one_line(
    tmp_path: Path, secret_key: str | None, line: str
) -> None:
    env = _env()
    del env["LIANYI_SECRET_KEY"]
    if secret_key is not None:
        env["LIANYI_SECRET_KEY"] = secret_key
    code, out, err = await _run("serve", env=env, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and err.startswith(line), err


async def test_migrate_reports_the_revision(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    code, out, _ = await _run("migrate", env=_env(LIANYI_DATABASE_URL=url), cwd=tmp_path)
    assert code == 0 and out.startswith("database at ") and "(was empty)" in out
    code, out, _ = await _run("migrate", env=_env(LIANYI_DATABASE_URL=url), cwd=tmp_path)
    assert code == 0 and "(was empty)" not in out


async def test_serve_migrates_a_fresh_sqlite_file_and_reports_health(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(LIANYI_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}", LIANYI_PORT=str(port))
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), "serve", env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            health = None
            async with asyncio.timeout(30):
                while health is None:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            health = (resp.status, await resp.json())
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            templates = {"templates": "ok", "template_problems": "0", "templates_running": "current"}
            healthy = {"status": "ok", "database": "ok", "leader": "yes", "outbox_unknown": "0", **templates}
            assert health == (200, healthy)
            async with http.get(f"http://127.0.0.1:{port}/wecom/callback") as resp:
                assert resp.status == 400  # no verification parameters
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                metrics = await resp.text()
            assert 'lianyi_callbacks_total{method="GET",outcome="missing_parameters"} 1.0' in metrics
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert (tmp_path / "fresh.db").exists()
    assert '"level": "INFO"' in err.decode()  # JSON log lines


@pytest.mark.parametrize("roles", ["edge,bogus"])
async def test_unknown_role_is_refused(tmp_path: Path, roles: str) -> None:
    code, _, err = await _run("serve", "--roles", roles, env=_env(), cwd=tmp_path)
    assert code == 2
    assert "unknown role 'bogus'" in err


async def test_metrics_count_handled_events_and_finished_commands(tmp_path: Path) -> None:
    """/metrics after the demo loop: events handled and welcome commands done are counted."""
    url = await create_sqlite_database(tmp_path / "metrics.db")
    before = (
        metrics.REGISTRY.get_sample_value("lianyi_outbox_finished_total", {"kind": "send_welcome", "status": "done"})
        or 0.0
    )
    async with LocalStack(scenario=load_scenario(), database_url=url) as stack:
        report = await run_demo_loop(stack)
        async with aiohttp.ClientSession() as http:
            base = stack.callback_url.removesuffix("/wecom/callback")
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
    done = metrics.REGISTRY.get_sample_value("lianyi_outbox_finished_total", {"kind": "send_welcome", "status": "done"})
    assert done == before + report.welcomes_sent
    assert 'lianyi_inbox_handled_total{event_type="contact.added",outcome="ok"}' in text
    assert "lianyi_outbox_command_age_seconds_bucket" in text
