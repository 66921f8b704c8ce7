"""The one exception root of Lianyi.

``bot`` subclasses these for WeCom errcodes (see ``bot.wecom.errors``); ``scrm`` raises them for domain
problems. Catch ``LianyiError`` at the edges (CLI, worker) and nowhere in between.
"""

from __future__ import annotations


class LianyiError(Exception):
    """Root of every error Lianyi raises on purpose."""


class SettingsError(LianyiError):
    """A setting is missing or malformed; the message names the setting in one line."""


class DomainError(LianyiError):
    """A domain rule was broken (bad input to a scrm service)."""


class StateGrammarError(DomainError):
    """A contact-way ``state`` string could not be built (too long, bad characters)."""
