"""``--as USERNAME``: who runs a command that changes things.

The CLI runs on the server, so it is trusted to act as an existing user, but only as an active one and only
within that user's role: the domain resolves the name with :func:`scrm.accounts.actors.require_actor` in the
same transaction as the change, so a refused name changes nothing. A refusal is one Chinese line, exit 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def as_option(what: str) -> Callable[[F], F]:
    """The required ``--as USERNAME`` option, passed to the command as ``actor``; ``what`` names the role needed."""
    return click.option(
        "--as",
        "actor",
        required=True,
        metavar="USERNAME",
        help=f"The Lianyi user doing this (lianyi user add): {what}.",
    )
