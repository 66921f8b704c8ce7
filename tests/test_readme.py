"""The README documents every setting and the commands it promises."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_table() -> None:
    missing = [f"LIANYI_{name.upper()}" for name in Settings.model_fields if f"`LIANYI_{name.upper()}`" not in README]
    assert missing == []


def test_readme_names_no_setting_that_does_not_exist() -> None:
    documented = set(re.findall(r"`(LIANYI_[A-Z_]+)`", README))
    known = {f"LIANYI_{name.upper()}" for name in Settings.model_fields}
    assert documented - known == set()


def test_quick_start_commands() -> None:
    assert "pip install -e '.[dev]'\nlianyi demo\n" in README
    assert "```sh\npytest -q\n```" in README
