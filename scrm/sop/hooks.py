"""Where the sync services reach the SOP engine without depending on how a process wired it.

The runtime installs its :class:`~scrm.sop.engine.SopServices` at start (:func:`install`) and removes them at
stop. A service calls :func:`active`; with nothing installed (a bare ``lianyi sync``, unit tests of the sync
layer) no SOP starts and the built-in welcome answers contact adds.
"""

from __future__ import annotations

from scrm.sop.engine import SopServices

_installed: list[SopServices] = []


def install(services: SopServices) -> None:
    _installed.append(services)


def uninstall(services: SopServices) -> None:
    if services in _installed:
        _installed.remove(services)


def active() -> SopServices | None:
    """The most recently installed services, or None."""
    return _installed[-1] if _installed else None
