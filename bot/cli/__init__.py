"""The ``lianyi`` command line. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import sys

import click

from scrm.errors import SettingsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Lianyi (涟漪): WeCom private-domain bot and SCRM for car brands and dealers."""


def _register() -> None:
    # One line per sub-command module; keep alphabetical.
    from bot.cli.campaign import campaign

    cli.add_command(campaign)
    from bot.cli.deadletter import deadletter

    cli.add_command(deadletter)
    from bot.cli.demo import demo_command

    cli.add_command(demo_command)
    from bot.cli.emulator import emulator_command

    cli.add_command(emulator_command)
    from bot.cli.ingest import ingest

    cli.add_command(ingest)
    from bot.cli.intent import intent

    cli.add_command(intent)
    from bot.cli.leads import leads, staff

    cli.add_command(leads)
    cli.add_command(staff)
    from bot.cli.migrate import migrate_command

    cli.add_command(migrate_command)
    from bot.cli.roster import roster

    cli.add_command(roster)
    from bot.cli.serve import serve_command

    cli.add_command(serve_command)
    from bot.cli.sop import sop

    cli.add_command(sop)
    import bot.cli.sop_run  # noqa: F401  (adds render and dry-run to the sop group)
    from bot.cli.sync import sync_command

    cli.add_command(sync_command)


def main() -> None:
    _register()
    try:
        cli.main(standalone_mode=True)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
