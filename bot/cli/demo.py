"""``lianyi demo``."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from bot.logs import configure_logging


@click.command("demo")
@click.option("--port", default=8080, show_default=True, help="Port Lianyi listens on (127.0.0.1).")
@click.option(
    "--db",
    "db_path",
    default="lianyi-demo.db",
    show_default=True,
    type=click.Path(path_type=Path),
    help="SQLite file (recreated on every run).",
)
@click.option("--scenario", "scenario_path", default=None, help="Emulator scenario YAML (default: the shipped one).")
@click.option("--seed", default=None, type=int, help="Random seed of the simulated customers.")
@click.option("--exit", "exit_after", is_flag=True, help="Exit after the report instead of keeping the server up.")
def demo_command(port: int, db_path: Path, scenario_path: str | None, seed: int | None, exit_after: bool) -> None:
    """Run the whole loop on SQLite with the WeCom emulator and simulated customers."""
    from bot.emulator.demo import demo_main  # the whole runtime; imported only when needed

    configure_logging("WARNING", json_lines=False)
    code = 130
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(
            demo_main(db_path=db_path, port=port, scenario_path=scenario_path, keep_running=not exit_after, seed=seed)
        )
    raise SystemExit(code)
