"""Hot reload: a changed folder is re-validated and picked up without a restart; an invalid edit keeps the
last good catalog running and reports the problem; never half-loaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scrm.sop.catalog import CatalogHolder

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a visibly newer mtime


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "sop"
    shutil.copytree(SHIPPED, target)
    return target


@pytest.fixture
def holder(folder: Path) -> tuple[CatalogHolder, Ticker]:
    clock = Ticker()
    return CatalogHolder(folder, check_every=2.0, clock=clock), clock


def test_first_load_runs_every_shipped_template(holder: tuple[CatalogHolder, Ticker]) -> None:
    catalog = holder[0].current()
    assert catalog.ok and catalog.generation == 1
    assert "new_customer_nurture" in catalog.bundles and catalog.has_welcome_step()
    assert holder[0].problems == []


def test_a_valid_edit_is_picked_up_after_the_check_interval(folder: Path, holder: tuple[CatalogHolder, Ticker]) -> None:
    loaded, clock = holder
    before = loaded.current().bundles["silent_wakeup"].version
    path = folder / "silent_wakeup.yaml"
    _write(path, path.read_text(encoding="utf-8").replace("name: ", "name: 新版", 1))
    clock.now = 1.0
    assert loaded.current().bundles["silent_wakeup"].version == before  # not looked at yet
    clock.now = 2.5
    catalog = loaded.current()
    assert catalog.bundles["silent_wakeup"].version != before
    assert catalog.bundles["silent_wakeup"].template.name.startswith("新版")
    assert catalog.generation == 2


def test_an_edited_message_file_is_a_new_version(folder: Path, holder: tuple[CatalogHolder, Ticker]) -> None:
    loaded, clock = holder
    before = loaded.current().bundles["new_customer_nurture"].version
    default = folder / "welcome" / "default.j2"
    _write(default, default.read_text(encoding="utf-8") + "\n欢迎随时咨询。")
    clock.now = 3.0
    assert loaded.current().bundles["new_customer_nurture"].version != before


def test_an_invalid_edit_keeps_the_last_good_catalog_and_reports_it(
    folder: Path, holder: tuple[CatalogHolder, Ticker]
) -> None:
    loaded, clock = holder
    good = loaded.current()
    path = folder / "silent_wakeup.yaml"
    original = path.read_text(encoding="utf-8")
    _write(path, original.replace("steps:", "stpes:", 1))
    clock.now = 3.0
    assert loaded.current() is good
    assert any("silent_wakeup.yaml" in p and "SOP002" in p and "steps" in p for p in loaded.problems)
    _write(path, original + "\n")  # fixed again
    clock.now = 6.0
    fixed = loaded.current()
    assert fixed is not good and fixed.generation == good.generation + 1 and loaded.problems == []


def test_never_half_loaded_one_bad_file_holds_back_every_change(
    folder: Path, holder: tuple[CatalogHolder, Ticker]
) -> None:
    loaded, clock = holder
    good = loaded.current()
    owner = folder / "owner_care.yaml"
    _write(owner, owner.read_text(encoding="utf-8").replace("name: ", "name: 改过的", 1))
    broken = folder / "lost_recall.yaml"
    _write(broken, broken.read_text(encoding="utf-8") + "\n  - after: 3x\n")
    clock.now = 3.0
    current = loaded.current()
    assert current is good
    assert not current.bundles["owner_care"].template.name.startswith("改过的")
    assert loaded.problems


def test_a_deleted_or_disabled_template_ends_its_enrolments(folder: Path, holder: tuple[CatalogHolder, Ticker]) -> None:
    loaded, clock = holder
    assert loaded.current().end_reason("silent_wakeup") is None
    (folder / "silent_wakeup.yaml").unlink()
    lost = folder / "lost_recall.yaml"
    _write(lost, lost.read_text(encoding="utf-8").replace("kind: contact", "kind: contact\nenabled: false", 1))
    clock.now = 3.0
    catalog = loaded.current()
    assert catalog.end_reason("silent_wakeup") == "template_deleted"
    assert catalog.end_reason("lost_recall") == "template_disabled"


def test_a_folder_broken_from_the_start_runs_nothing_and_cancels_nothing(folder: Path) -> None:
    path = folder / "owner_care.yaml"
    _write(path, "id: owner_care\nname: [unclosed\n")
    loaded = CatalogHolder(folder, check_every=2.0, clock=Ticker())
    catalog = loaded.current()
    assert not catalog.ok and catalog.bundles == {}
    assert catalog.end_reason("owner_care") is None  # unknown is not "deleted" when nothing ever loaded
    assert any("owner_care.yaml" in p and "SOP001" in p for p in loaded.problems)
