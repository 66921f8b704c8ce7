"""``lianyi --help`` starts light: sub-command modules (and what they import) load only when their command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from bot.cli import COMMANDS, cli

HEAVY = ("sklearn", "sqlalchemy", "sqlmodel", "aiohttp", "scrm.campaigns", "bot.cli.campaign", "bot.runtime")

PROBE = """
import json, sys
from bot.cli import main
sys.argv = ["lianyi", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(*args: str) -> tuple[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    return done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_top_level_help_imports_no_heavy_library_and_lists_every_command() -> None:
    out, modules = _modules_after("--help")
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == []
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "(群发活动)" in out and "(全量同步，可断点续传)" in out


def test_a_sub_command_loads_only_its_own_module() -> None:
    out, modules = _modules_after("sop", "--help")
    assert "render" in out and "dry-run" in out and "check" in out
    assert "bot.cli.campaign" not in modules and "sklearn" not in modules


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_listed_help_is_the_first_line_of_the_command_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.help is not None
    assert COMMANDS[name].summary == command.help.strip().splitlines()[0]
