"""The process services a test passes to domain calls (what a running Lianyi process builds once at start)."""

from __future__ import annotations

import functools
from pathlib import Path

from scrm.intent.services import IntentServices
from scrm.leads.services import LeadServices
from scrm.services import Services
from scrm.sop.services import SopServices

SOP_DIR = Path("sop_templates")


@functools.cache
def _intent(folder: Path) -> IntentServices:
    return IntentServices(folder)


def intent_for(sop_dir: str | Path = SOP_DIR) -> IntentServices:
    """The intent services of ``sop_dir``, one per folder for the whole test run (a process trains the model once;
    each test re-training it would only cost time — the services reload a changed intent.yaml by themselves)."""
    return _intent(Path(sop_dir).resolve())


def process_services(
    sop_dir: str | Path = SOP_DIR, *, sop: SopServices | None = None, leads: LeadServices | None = None
) -> Services:
    """A process's services on ``sop_dir`` with the SOP engine and lead handoff only when given."""
    return Services(sop_dir=Path(sop_dir), intent=intent_for(sop_dir), sop=sop, leads=leads)
