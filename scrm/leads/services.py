"""What lead handoff needs inside a process: the handoff rules (re-read when handoff.yaml changes; an invalid
edit keeps the last good rules and is logged), where advisors open a lead, and the lifecycle hooks through which
a lead's outcome reaches the other features (a delivery makes the contact an owner, an approved loss starts the
战败召回 SOP). Built once by the process's services and passed explicitly."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from scrm.leads.rules import HANDOFF_FILE, HandoffRules, HandoffRulesError, load_handoff_rules
from scrm.lifecycle import NO_HOOKS, LifecycleHooks

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0


@dataclass
class LeadServices:
    sop_dir: Path
    console_url: str = "https://work.weixin.qq.com/"
    recheck_seconds: float = RECHECK_SECONDS
    hooks: LifecycleHooks = NO_HOOKS
    _rules: HandoffRules | None = field(default=None, init=False)
    _mtime: float | None = field(default=None, init=False)
    _checked: float = field(default=-1e9, init=False)

    @classmethod
    def with_rules(
        cls, rules: HandoffRules, console_url: str = "https://work.weixin.qq.com/", hooks: LifecycleHooks = NO_HOOKS
    ) -> LeadServices:
        """Services with fixed rules (tests, benchmarks): the file is never read."""
        services = cls(Path("/nonexistent"), console_url, hooks=hooks)
        services._rules, services._checked = rules, float("inf")
        return services

    def rules(self) -> HandoffRules:
        """The current rules; the file is looked at again at most every ``recheck_seconds``."""
        clock = time.monotonic()
        if clock - self._checked < self.recheck_seconds and self._rules is not None:
            return self._rules
        self._checked = clock
        path = self.sop_dir / HANDOFF_FILE
        try:
            mtime: float | None = path.stat().st_mtime
        except OSError:
            mtime = None
        if self._rules is not None and mtime == self._mtime:
            return self._rules
        if mtime is None:
            self._rules, self._mtime = HandoffRules(), None
            return self._rules
        try:
            self._rules = load_handoff_rules(path)
            self._mtime = mtime
        except HandoffRulesError as exc:
            log.error("handoff.yaml is invalid; keeping the last good rules", extra={"problems": str(exc)})
            self._mtime = mtime  # logged once per edit
            if self._rules is None:
                self._rules = HandoffRules()
        return self._rules

    def lead_url(self, lead_id: int | None) -> str:
        base = self.console_url.rstrip("/")
        return f"{base}/leads/{lead_id}" if lead_id is not None else f"{base}/leads"
