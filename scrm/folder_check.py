"""``lianyi sop check``: the SOP folder as operators edit it — every template, and every feature's rule file beside
them (intent.yaml as SOP027, handoff.yaml as SOP028). The SOP checker knows no feature; this module, like
:mod:`scrm.services`, is where the features are put together."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from scrm.config_file import RuleFile
from scrm.intent.rules import INTENT_RULE_FILE
from scrm.leads.rules import HANDOFF_RULE_FILE
from scrm.problems import Problem
from scrm.sop import check

RULE_FILES: tuple[RuleFile, ...] = (INTENT_RULE_FILE, HANDOFF_RULE_FILE)


def check_folder(sop_dir: str | Path, *, now: datetime | None = None) -> list[Problem]:
    """Every problem of the SOP folder ``sop_dir`` (empty list = everything in it is good)."""
    return check.check_folder(sop_dir, now=now, rule_files=RULE_FILES)


def check_path(path: str | Path, *, now: datetime | None = None) -> tuple[list[Problem], int]:
    """Check a folder, or one file in the context of its folder; the problems and how many templates were
    checked."""
    return check.check_path(path, now=now, rule_files=RULE_FILES)
