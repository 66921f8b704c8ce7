"""What the intent feature keeps in a process: the classifier of one SOP folder's ``intent.yaml``, rebuilt (model
retrained) when the file or the model's examples file changes. One instance lives in the process's services."""

from __future__ import annotations

import logging
from pathlib import Path

from scrm.intent.classifier import Classifier, classifier_from_file
from scrm.intent.model import examples_mtime
from scrm.intent.rules import INTENT_FILE, IntentRules, IntentRulesError

log = logging.getLogger(__name__)


class IntentServices:
    """The classifier of ``sop_dir/intent.yaml``.

    A folder without intent.yaml gets a rule-less classifier (every message ``other``). When the file turns
    invalid after a good load, the last good classifier is kept and the error logged; with no good load yet,
    :class:`~scrm.intent.rules.IntentRulesError` is raised. A missing examples file means rules only (logged)."""

    def __init__(self, sop_dir: str | Path) -> None:
        self.sop_dir = Path(sop_dir).resolve()
        self._empty = Classifier(IntentRules())
        self._loaded: tuple[tuple[int, int], Classifier] | None = None

    def classifier(self) -> Classifier:
        path = self.sop_dir / INTENT_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._empty
        cached = self._loaded
        if cached is not None and cached[0] == (mtime, examples_mtime(cached[1].rules.model, path.parent)):
            return cached[1]
        try:
            classifier = classifier_from_file(path)
        except IntentRulesError as exc:
            if cached is None:
                raise
            log.error("intent rules invalid, keeping the previous ones: %s", exc)
            self._loaded = ((mtime, examples_mtime(cached[1].rules.model, path.parent)), cached[1])
            return cached[1]
        self._loaded = ((mtime, examples_mtime(classifier.rules.model, path.parent)), classifier)
        return classifier
