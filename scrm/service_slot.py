"""A process-wide slot for services the runtime installs at start (SOP engine, lead handoff), so domain code
reaches them without depending on how a process was wired. Nothing installed = the feature is off (unit
tests of other layers, a bare ``lianyi sync``)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class ServiceSlot(Generic[T]):
    def __init__(self) -> None:
        self._installed: list[T] = []

    def install(self, services: T) -> None:
        self._installed.append(services)

    def uninstall(self, services: T) -> None:
        if services in self._installed:
            self._installed.remove(services)

    def active(self) -> T | None:
        """The most recently installed services, or None."""
        return self._installed[-1] if self._installed else None
