"""The process services a test passes to domain calls (what a running Lianyi process builds once at start)."""

from __future__ import annotations

import functools
from pathlib import Path

from scrm.intent.services import IntentServices
from scrm.leads.services import LeadServices
from scrm.services import Services
from scrm.sop.catalog import Catalog, CatalogHolder
from scrm.sop.services import SopServices
from scrm.sop.source import load_folder

SOP_DIR = Path("sop_templates")
# an SOP folder whose only template sends the welcome of welcome/<channel>.j2
WELCOME_ONLY_SOP = """
id: welcome_only
name: 欢迎语
kind: contact
trigger: {event: contact.added}
steps:
  - immediately: true
    welcome: {by_channel: welcome}
"""


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


def running_sop(sop_dir: str | Path = SOP_DIR) -> SopServices:
    """The folder's templates as a running catalog, loaded without ``sop check``: a test may run a template that
    fails only when it renders, as an in-flight enrolment on an older stored version can."""
    load = load_folder(sop_dir)
    catalog = Catalog(bundles=dict(load.bundles), policy=load.policy, ok=True, generation=1)
    return SopServices(holder=CatalogHolder.fixed(catalog))


def sop_process_services(sop_dir: str | Path = SOP_DIR) -> Services:
    """A process's services whose SOP engine runs the templates of ``sop_dir`` (the shipped folder by default)."""
    return process_services(sop_dir, sop=running_sop(sop_dir))
