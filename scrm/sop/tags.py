"""The tag vocabulary of an SOP folder (``tags.yaml``): {group name: [tag names]}.

Templates name a tag as ``标签名`` when that name is unique across groups, or as ``组名/标签名``. The
checker reports every reference that names no tag or more than one (:meth:`TagVocabulary.problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scrm.problems import Problem
from scrm.yaml_positions import YamlSyntaxError, parse_yaml


@dataclass(frozen=True)
class TagVocabulary:
    """``tags.yaml``: {group name: [tag names]}. Templates name a tag as ``标签名`` (unique across groups)
    or ``组名/标签名``."""

    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def resolve(self, ref: str) -> tuple[str, str] | None:
        """(group, tag) for a reference, or None when it is unknown or ambiguous."""
        found = self._matches(ref)
        return found[0] if len(found) == 1 else None

    def problem(self, ref: str) -> str | None:
        """A Chinese message when ``ref`` does not name exactly one tag; None when it does."""
        found = self._matches(ref)
        if len(found) == 1:
            return None
        if found:
            choices = "、".join(f"{group}/{name}" for group, name in found)
            return f"标签 {ref} 在多个标签组中，请写成 组名/标签名：{choices}"
        return f"未知标签 {ref}（tags.yaml 中没有）"

    def _matches(self, ref: str) -> list[tuple[str, str]]:
        group, slash, name = ref.partition("/")
        if slash:
            return [(group, name)] if name in self.groups.get(group, ()) else []
        return [(g, ref) for g, names in self.groups.items() if ref in names]


def load_tags(path: Path, shown: str) -> tuple[TagVocabulary, list[Problem]]:
    """Read ``tags.yaml`` (missing file = empty vocabulary)."""
    if not path.is_file():
        return TagVocabulary(), []
    try:
        document, duplicates = parse_yaml(path.read_text(encoding="utf-8"))
    except YamlSyntaxError as exc:
        return TagVocabulary(), [Problem(shown, exc.mark.line, exc.mark.col, "SOP001", exc.message)]
    except (OSError, UnicodeDecodeError) as exc:
        return TagVocabulary(), [Problem(shown, 1, 1, "SOP026", f"无法读取 tags.yaml：{exc}")]
    problems = [Problem(shown, m.line, m.col, "SOP025", msg) for m, msg in duplicates]
    data, source = document.data, document.source
    if data is None:
        return TagVocabulary(), problems
    if not isinstance(data, dict):
        return TagVocabulary(), [*problems, Problem(shown, 1, 1, "SOP026", "tags.yaml 应为 {标签组: [标签, …]}")]
    groups: dict[str, tuple[str, ...]] = {}
    for group, names in data.items():
        items = names if isinstance(names, list) else [names]
        bad = not isinstance(group, str) or not all(isinstance(n, str) and n and "/" not in n for n in items)
        if bad or "/" in str(group):
            mark = source.locate((group,))
            message = f"标签组 {group} 应为不含“/”的标签名列表"
            problems.append(Problem(shown, mark.line, mark.col, "SOP026", message))
            continue
        groups[group] = tuple(items)
    return TagVocabulary(groups), problems
