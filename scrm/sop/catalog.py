"""The templates a process runs, hot-reloaded from the SOP folder.

Every process (worker, scheduler…) holds one :class:`CatalogHolder` per SOP folder. :meth:`CatalogHolder.current`
looks at the folder's fingerprint (every file's path, size and mtime) at most every ``check_every`` seconds;
when it changed, the whole folder is loaded and checked again (:func:`scrm.sop.check.check_folder`; in a process
with an event loop, in a worker thread: :meth:`CatalogHolder.refresh`). Only a
folder without a single problem replaces the running catalog — all of it at once, never half-loaded. An
invalid edit keeps the last good catalog running; the problems are logged (one line each, with
``file:line:col code``) and kept on :attr:`CatalogHolder.problems` for ``/healthz`` and the console;
:meth:`CatalogHolder.health` sums them up (count, first ``file:line:col CODE``, which templates run).

A process whose very first load fails runs an *empty* catalog flagged ``ok=False``: no template starts,
enrolments already in flight keep running on their stored versions, and nothing is cancelled because of
templates that merely failed to load (only a good catalog can say a template was deleted or disabled).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scrm.config_file import RuleFile
from scrm.contact_policy import Policy
from scrm.sop.check import check_loaded
from scrm.sop.source import load_folder
from scrm.sop.spec import TemplateBundle

log = logging.getLogger(__name__)

FOLDER_SUFFIXES = frozenset({".yaml", ".yml", ".j2"})
UNREADABLE_FOLDER_CODE = "SOP019"  # the folder itself cannot be read: reported as an unreadable file


@dataclass(frozen=True, slots=True)
class TemplateHealth:
    """The state of a process's templates for ``/healthz`` and ``/metrics``.

    ``running``: ``current`` (the folder as it is now), ``last_good`` (the folder has problems; the last good
    templates keep running), ``none`` (nothing good was ever loaded: no template starts)."""

    problems: int
    first: str  # "file:line:col CODE" of the first problem, file relative to the SOP folder; "" when none
    running: str


@dataclass(frozen=True)
class Catalog:
    bundles: Mapping[str, TemplateBundle] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    ok: bool = True  # False: nothing valid was ever loaded (see the module docstring)
    generation: int = 0  # bumps on every successful reload

    def enabled(self) -> list[TemplateBundle]:
        """Enabled templates, higher priority first (then by id, for a stable order)."""
        live = [b for b in self.bundles.values() if b.template.enabled]
        return sorted(live, key=lambda b: (-b.template.priority, b.id))

    def for_event(self, event: str) -> list[TemplateBundle]:
        return [b for b in self.enabled() if b.template.trigger.event == event]

    def scheduled(self) -> list[TemplateBundle]:
        return [b for b in self.enabled() if b.template.trigger.event is None]

    def has_welcome_step(self) -> bool:
        """True when an enabled contact.added template sends the welcome (without one, new customers get none)."""
        return any(any(s.welcome is not None for s in b.template.steps) for b in self.for_event("contact.added"))

    def end_reason(self, template_id: str) -> str | None:
        """Why enrolments of ``template_id`` must end now: deleted or disabled (None = keep running)."""
        if not self.ok:
            return None
        bundle = self.bundles.get(template_id)
        if bundle is None:
            return "template_deleted"
        if not bundle.template.enabled:
            return "template_disabled"
        return None


def folder_fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Path, size and mtime (ns) of every template, policy and message file below ``directory``."""
    entries: list[tuple[str, int, int]] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            if path.suffix in FOLDER_SUFFIXES:
                try:
                    stat = path.stat()
                except OSError:
                    continue
                entries.append((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What the holder runs and reports, replaced whole by a reload (read safely from any thread)."""

    catalog: Catalog
    problems: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()  # "file:line:col CODE" of each problem


class CatalogHolder:
    """The running catalog of one SOP folder, reloaded when the folder changes (see the module docstring).

    Loading and checking a folder renders every message (a bounded but real cost), so a process with an event loop
    calls :meth:`watch_in_background` and runs :meth:`refresh` (the reload in a worker thread) from a task every
    ``check_every`` seconds: :meth:`current` then only reads the running catalog and never blocks the loop. Without
    it (the CLI, dry runs), :meth:`current` reloads in line, at most every ``check_every`` seconds."""

    def __init__(
        self,
        directory: str | Path,
        *,
        check_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        rule_files: Sequence[RuleFile] = (),
    ) -> None:
        """``rule_files``: the folder's other rule files (intent.yaml, handoff.yaml…); a problem in one keeps the
        last good templates running too, as ``lianyi sop check`` would refuse the folder."""
        self.directory = Path(directory)
        self.rule_files = tuple(rule_files)
        self.check_every = check_every
        self._clock = clock
        self._loaded = _Loaded(Catalog(ok=False))
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self._checked_at: float | None = None
        self._background = False
        self._reloading = threading.Lock()  # one reload at a time (a worker thread, or the caller's)

    @classmethod
    def fixed(cls, catalog: Catalog) -> CatalogHolder:
        """A holder that always returns ``catalog`` and never looks at a folder (dry runs, tests)."""
        holder = cls(Path("."), check_every=float("inf"))
        holder._loaded = _Loaded(catalog)
        holder._checked_at = 0.0
        return holder

    @property
    def problems(self) -> list[str]:
        """The problems of the folder as last looked at (``file:line:col code message``; empty when good)."""
        return list(self._loaded.problems)

    @property
    def reloads_in_background(self) -> bool:
        """True once :meth:`watch_in_background` was called: :meth:`current` no longer reloads."""
        return self._background

    def watch_in_background(self) -> None:
        """From now on :meth:`current` never reloads: the caller runs :meth:`refresh` periodically."""
        self._background = True

    async def refresh(self, *, force: bool = False) -> bool:
        """:meth:`reload` in a worker thread, so no template, however costly, holds up the event loop."""
        return await asyncio.to_thread(self.reload, force=force)

    def current(self) -> Catalog:
        if not self._background:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self.check_every:
                self._checked_at = now
                self.reload()
        return self._loaded.catalog

    def reload(self, *, force: bool = False) -> bool:
        """Load the folder again if it changed (or ``force``); True when a new catalog is now running."""
        with self._reloading:
            return self._reload(force)

    def _reload(self, force: bool) -> bool:
        fingerprint = folder_fingerprint(self.directory)
        if not force and fingerprint == self._fingerprint:
            return False
        running = self._loaded.catalog
        try:
            loaded = load_folder(self.directory)
            checked = check_loaded(loaded, self.directory, rule_files=self.rule_files)
        except OSError as exc:
            self._fingerprint = fingerprint
            problem = f"{self.directory}: 无法读取 SOP 目录（{exc.strerror or exc}）"
            self._loaded = _Loaded(running, (problem,), (f"{self.directory}:1:1 {UNREADABLE_FOLDER_CODE}",))
            log.error("SOP folder cannot be read; keeping the last good templates: %s", exc)
            return False
        if folder_fingerprint(self.directory) != fingerprint:  # edited while we read it: look again next time
            return False
        self._fingerprint = fingerprint
        found = checked or loaded.problems
        if found:
            heads = tuple(f"{self._shown(p.path)}:{p.line}:{p.col} {p.code}" for p in found)
            self._loaded = _Loaded(running, tuple(str(p) for p in found), heads)
            for line in self._loaded.problems:
                log.error("SOP folder has a problem; keeping the last good templates: %s", line)
            return False
        catalog = Catalog(
            bundles=dict(loaded.bundles), policy=loaded.policy, ok=True, generation=running.generation + 1
        )
        self._loaded = _Loaded(catalog)
        if not catalog.has_welcome_step():
            log.warning("no enabled contact.added template has a welcome step: new customers get no welcome")
        log.info(
            "SOP templates loaded",
            extra={
                "directory": str(self.directory),
                "templates": len(loaded.bundles),
                "versions": {b.id: b.version for b in loaded.bundles.values()},
            },
        )
        return True

    def health(self) -> TemplateHealth:
        """The templates' state, after looking at the folder (at most every ``check_every`` seconds)."""
        self.current()
        loaded = self._loaded
        running = "none" if not loaded.catalog.ok else "last_good" if loaded.problems else "current"
        return TemplateHealth(len(loaded.problems), loaded.heads[0] if loaded.heads else "", running)

    def _shown(self, path: str) -> str:
        try:
            return Path(path).resolve().relative_to(self.directory.resolve()).as_posix()
        except ValueError:
            return path
