"""The ``lianyi`` command line. Each sub-command lives in its own module of this package.

Sub-command modules are imported lazily, only when their command runs (or its own ``--help`` is asked for):
several import scikit-learn, SQLAlchemy, aiohttp or the whole runtime, and ``lianyi --help`` must not pay for
them. The one-line help of each command is therefore kept in :data:`COMMANDS`;
``tests/cli/test_startup.py`` checks it equals the first line of the command's own help.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import click

from scrm.errors import SettingsError


@dataclass(frozen=True)
class LazyCommand:
    """Where a sub-command lives (``module:attribute``) and its one-line help, shown without importing it."""

    target: str
    summary: str

    def load(self) -> click.Command:
        module_name, attribute = self.target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


# Keep alphabetical. ``sop`` is taken from sop_run, which adds render and dry-run to the group of bot.cli.sop.
COMMANDS: dict[str, LazyCommand] = {
    "audit": LazyCommand("bot.cli.audit:audit", "The audit log: who changed what, and when (审计日志)."),
    "campaign": LazyCommand(
        "bot.cli.campaign:campaign", "Group pushes (群发活动): 1vN to customer groups, or 1v1 to customers."
    ),
    "deadletter": LazyCommand(
        "bot.cli.deadletter:deadletter", "Dead letters (死信): events and commands that exhausted their retries."
    ),
    "demo": LazyCommand(
        "bot.cli.demo:demo_command", "Run the whole loop on SQLite with the WeCom emulator and simulated customers."
    ),
    "emulator": LazyCommand(
        "bot.cli.emulator:emulator_command",
        "Run the WeCom emulator (the only stand-in for WeCom in tests, the demo and benchmarks).",
    ),
    "ingest": LazyCommand("bot.cli.ingest:ingest", "Import data from other systems (导入外部数据)."),
    "intent": LazyCommand(
        "bot.cli.intent:intent", "Intent rules: classify messages, evaluate on a labelled file (意向识别)."
    ),
    "leads": LazyCommand("bot.cli.leads:leads", "Leads handed to dealers (线索): reports and history."),
    "migrate": LazyCommand(
        "bot.cli.migrate:migrate_command", "Apply database migrations (SQLite or PostgreSQL, from LIANYI_DATABASE_URL)."
    ),
    "privacy": LazyCommand(
        "bot.cli.privacy:privacy", "Customers' personal data (个人信息): export and erase under PIPL."
    ),
    "roster": LazyCommand("bot.cli.roster:roster", "Dealers and staff (门店与成员花名册)."),
    "serve": LazyCommand(
        "bot.cli.serve:serve_command", "Run Lianyi: receive WeCom callbacks, process them, talk back to WeCom."
    ),
    "session": LazyCommand("bot.cli.tokens:session", "Console sessions (后台登录会话): end them all."),
    "sop": LazyCommand("bot.cli.sop_run:sop", "SOP templates: check, render, dry-run (SOP 模板工具)."),
    "staff": LazyCommand("bot.cli.tokens:staff", "Staff members (成员): API tokens for the lead API."),
    "sync": LazyCommand(
        "bot.cli.sync:sync_command", "Full sync from WeCom: corp tags, staff, contacts, groups (全量同步，可断点续传)."
    ),
    "user": LazyCommand("bot.cli.users:user", "Users who sign in to Lianyi and act on the CLI (用户与角色)."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use (the pattern of click's "lazy loading" docs)."""

    def __init__(self, *args: object, lazy: dict[str, LazyCommand], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from :data:`COMMANDS`, so ``lianyi --help`` imports no sub-command module."""
        rows = [(name, self.lazy[name].summary) for name in self.list_commands(ctx) if name in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Lianyi (涟漪): WeCom private-domain bot and SCRM for car brands and dealers."""


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
