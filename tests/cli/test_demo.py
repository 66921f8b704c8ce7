"""`lianyi demo` as a new user runs it: a busy port is one line; a short run shows every capability in its
summary, prints no English warning, and its environment lines run `lianyi` commands against its database."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

LIANYI = Path(sys.executable).with_name("lianyi")


async def lianyi(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI),
        *args,
        cwd=cwd,
        env={**base, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_scenario(path: Path) -> Path:
    """The shipped scenario with fewer customers and groups (every phase still runs)."""
    text = resources.files("bot.emulator").joinpath("default_scenario.yaml").read_text("utf-8")
    scenario = yaml.safe_load(text)
    sizes = {"add_customers": {"count": 60}, "groups": {"count": 8}, "deletions": {"staff_deletes": 2}}
    for phase in scenario["script"]:
        phase.update(sizes.get(phase["phase"], {}))
    path.write_text(yaml.safe_dump(scenario, allow_unicode=True), "utf-8")
    return path


async def test_a_busy_port_is_one_line_and_the_database_is_left_alone(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    database.write_bytes(b"not touched")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await lianyi("demo", "--exit", "--port", str(port), "--db", str(database), cwd=tmp_path)
    assert code != 0 and out == ""
    assert err.splitlines() == [
        f"端口 {port} 已被占用，请用 --port 换一个端口 / port {port} is already in use: pass --port"
    ]
    assert database.read_bytes() == b"not touched"


@pytest.mark.slow
async def test_the_demo_shows_leads_an_sla_rung_and_a_campaign_report(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    scenario = short_scenario(tmp_path / "short.yaml")
    args = ("demo", "--exit", "--port", str(free_port()), "--db", str(database), "--scenario", str(scenario))
    code, out, err = await lianyi(*args, "--seed", "7", cwd=tmp_path)
    assert code == 0, out + err
    assert "WARNING" not in out + err and "Traceback" not in out + err, err
    lines = out.splitlines()
    assert any(line.startswith("企业 ID（corp id）：ww") and str(database.resolve()) in line for line in lines)
    assert "渠道分布：qr " in out and "欢迎语延迟（事件发生 → 企业微信收到）：p50 " in out
    assert any(line.startswith("线索：") for line in lines)
    assert sum(line.startswith("  线索 ") for line in lines) >= 2
    assert "一直未接单" in out and "超时提醒顾问" in out
    assert "审批，已发送；报表：" in out and "（门店经理）审批" in out
    assert "群主确认率 100.0%，送达率 100.0%" in out

    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("  export "):
            env.update(word.split("=", 1) for word in shlex.split(line.removeprefix("  export ")))
    assert env["LIANYI_DATABASE_URL"] == f"sqlite+aiosqlite:///{database.resolve()}"
    code, report, err = await lianyi("campaign", "report", "demo_test_drive", cwd=tmp_path, env=env)
    assert code == 0, err
    assert "群发活动 demo_test_drive「周末试驾日」" in report
    code, shown, err = await lianyi("leads", "show", "1", cwd=tmp_path, env=env)
    assert code == 0 and shown.startswith("线索 1：客户 "), err
