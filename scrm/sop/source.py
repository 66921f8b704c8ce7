"""Reading an SOP folder: templates with positions, their message files, validated bundles.

Every template file is read with positions (:mod:`scrm.yaml_positions`); a pydantic
:class:`~pydantic.ValidationError` is mapped back to the best position (:meth:`SourceMap.for_error`).
:func:`load_folder` loads every template of a folder into a
:class:`FolderLoad`: the valid bundles, the policy, the tag vocabulary, and every problem found on the way
(problem codes: :mod:`scrm.sop.problems`). Deeper checks (Jinja2, tags used, quiet hours) live in
:mod:`scrm.sop.check`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from scrm.contact_policy import Policy, PolicyError, load_policy
from scrm.problems import Loc, Problem, error_code
from scrm.sop.problems import error_message, refine_loc
from scrm.sop.spec import SopTemplate, TemplateBundle
from scrm.sop.tags import TagVocabulary, load_tags
from scrm.yaml_positions import SourceMap, YamlSyntaxError, parse_yaml

POLICY_FILE = "policy.yaml"
TAGS_FILE = "tags.yaml"
INTENT_FILE = "intent.yaml"  # intent rules (scrm.intent.rules), checked by scrm.sop.check
HANDOFF_FILE = "handoff.yaml"  # lead handoff rules (scrm.leads.rules), checked by scrm.sop.check
SPECIAL_FILES = frozenset({POLICY_FILE, TAGS_FILE, INTENT_FILE, HANDOFF_FILE})
TEMPLATE_SUFFIXES = (".yaml", ".yml")
DEFAULT_CHANNEL_FILE = "default.j2"


# ---- message files ----------------------------------------------------------------------------------------


def message_locs(template: SopTemplate) -> Iterator[tuple[int, str]]:
    """(step index, action key) of every step that sends a message."""
    for index, step in enumerate(template.steps):
        if step.message is not None:
            yield index, step.action


class _FileCollector:
    def __init__(self, sop_dir: Path, shown: str, source: SourceMap) -> None:
        self.root = sop_dir.resolve()
        self.shown = shown
        self.source = source
        self.files: dict[str, str] = {}
        self.problems: list[Problem] = []

    def _problem(self, loc: Loc, message: str) -> None:
        mark = self.source.locate(loc)
        self.problems.append(Problem(self.shown, mark.line, mark.col, "SOP019", message))

    def _inside(self, relative: str, loc: Loc) -> Path | None:
        if PurePosixPath(relative).is_absolute() or "\\" in relative:
            self._problem(loc, f"路径 {relative} 应写成相对 SOP 目录的路径（用 /）")
            return None
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root):
            self._problem(loc, f"路径 {relative} 超出了 SOP 目录")
            return None
        return target

    def _read(self, target: Path, loc: Loc) -> None:
        name = target.relative_to(self.root).as_posix()
        if name in self.files:
            return
        try:
            self.files[name] = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._problem(loc, f"无法读取消息文件 {name}：{exc}")

    def _partials(self, folder: Path, loc: Loc) -> None:
        for partial in sorted(folder.glob("_*.j2")):
            self._read(partial, loc)

    def add_file(self, relative: str, loc: Loc) -> None:
        target = self._inside(relative, loc)
        if target is None:
            return
        if not target.is_file():
            self._problem(loc, f"消息文件不存在：{relative}")
            return
        self._read(target, loc)
        self._partials(target.parent, loc)

    def add_folder(self, relative: str, loc: Loc) -> None:
        target = self._inside(relative, loc)
        if target is None:
            return
        if not target.is_dir():
            self._problem(loc, f"by_channel 目录不存在：{relative}")
            return
        if not (target / DEFAULT_CHANNEL_FILE).is_file():
            self._problem(loc, f"by_channel 目录 {relative} 缺少 {DEFAULT_CHANNEL_FILE}（没有对应渠道时使用）")
        for path in sorted(target.glob("*.j2")):
            self._read(path, loc)


def collect_files(
    template: SopTemplate, sop_dir: Path, shown: str, source: SourceMap
) -> tuple[dict[str, str], list[Problem]]:
    """Every message file a template may render: ``file:`` paths, each ``by_channel`` folder's ``*.j2``,
    and the ``_*.j2`` partials next to them; paths relative to the SOP folder."""
    collector = _FileCollector(sop_dir, shown, source)
    for index, action in message_locs(template):
        message = template.steps[index].message
        assert message is not None
        if message.file:
            collector.add_file(message.file, ("steps", index, action, "file"))
        if message.by_channel:
            collector.add_folder(message.by_channel, ("steps", index, action, "by_channel"))
    return collector.files, collector.problems


# ---- templates and folders --------------------------------------------------------------------------------


@dataclass
class TemplateSource:
    """One template file as read: its raw mapping and positions, the bundle when it is valid."""

    path: Path
    shown: str  # the path as problems print it
    raw: Any = None
    source: SourceMap = field(default_factory=SourceMap)
    bundle: TemplateBundle | None = None
    problems: list[Problem] = field(default_factory=list)

    def add(self, loc: Loc, code: str, message: str) -> None:
        mark = self.source.locate(loc)
        self.problems.append(Problem(self.shown, mark.line, mark.col, code, message))


def _display(path: Path) -> str:
    return str(path)


def load_template(path: Path, sop_dir: Path, *, shown: str | None = None) -> TemplateSource:
    """Read and validate one template file; ``bundle`` is None when it has problems."""
    loaded = TemplateSource(path, shown or _display(path))
    try:
        document, duplicates = parse_yaml(path.read_text(encoding="utf-8"))
    except YamlSyntaxError as exc:
        loaded.problems.append(Problem(loaded.shown, exc.mark.line, exc.mark.col, "SOP001", exc.message))
        return loaded
    except (OSError, UnicodeDecodeError) as exc:
        loaded.problems.append(Problem(loaded.shown, 1, 1, "SOP001", f"无法读取文件（需要 UTF-8）：{exc}"))
        return loaded
    loaded.raw, loaded.source = document.data, document.source
    loaded.problems.extend(Problem(loaded.shown, m.line, m.col, "SOP025", msg) for m, msg in duplicates)
    if not isinstance(loaded.raw, dict):
        loaded.add((), "SOP001", "模板文件应为“字段: 值”的映射（一个文件一个模板）")
        return loaded
    try:
        json.dumps(loaded.raw, ensure_ascii=False)
    except (TypeError, ValueError):
        loaded.add((), "SOP004", "模板中有不支持的 YAML 类型（如 !!binary、!!set、!!timestamp），请写成普通文字")
        return loaded
    try:
        template = SopTemplate.model_validate(loaded.raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc, ctx = refine_loc(error, loaded.raw)
            mark = loaded.source.for_error(loc, error["type"], ctx)
            code, message = error_code(error), error_message(error)
            loaded.problems.append(Problem(loaded.shown, mark.line, mark.col, code, message))
        return loaded
    files, file_problems = collect_files(template, sop_dir, loaded.shown, loaded.source)
    loaded.problems.extend(file_problems)
    if not loaded.problems:
        relative = path.resolve().relative_to(sop_dir.resolve()).as_posix()
        loaded.bundle = TemplateBundle(template, loaded.raw, files, relative)
    return loaded


@dataclass
class FolderLoad:
    """An SOP folder as loaded: valid bundles by id, the policy, the tags, and every problem found."""

    bundles: dict[str, TemplateBundle]
    policy: Policy
    tags: TagVocabulary
    problems: list[Problem]
    sources: dict[str, TemplateSource] = field(default_factory=dict)  # by shown path, valid or not


def template_files(sop_dir: Path) -> list[Path]:
    """The template files of a folder (top level; the SPECIAL_FILES are not templates)."""
    found = [p for p in sop_dir.iterdir() if p.is_file() and p.suffix in TEMPLATE_SUFFIXES]
    return sorted(p for p in found if p.name not in SPECIAL_FILES)


def load_folder(sop_dir: str | Path) -> FolderLoad:
    """Load every template of ``sop_dir`` with the folder's policy and tag vocabulary."""
    folder = Path(sop_dir)
    problems: list[Problem] = []
    policy_path = folder / POLICY_FILE
    try:
        policy = load_policy(policy_path)
    except PolicyError as exc:
        policy = Policy()
        problems.append(Problem(_display(policy_path), exc.line or 1, exc.col or 1, "SOP022", exc.message_cn))
    tags, tag_problems = load_tags(folder / TAGS_FILE, _display(folder / TAGS_FILE))
    problems.extend(tag_problems)
    sources: dict[str, TemplateSource] = {}
    ids: dict[str, TemplateSource] = {}
    for path in template_files(folder):
        loaded = load_template(path, folder)
        sources[loaded.shown] = loaded
        template_id = loaded.raw.get("id") if isinstance(loaded.raw, dict) else None
        if isinstance(template_id, str):
            first = ids.setdefault(template_id, loaded)
            if first is not loaded:
                loaded.add(("id",), "SOP016", f"模板 id {template_id} 与 {first.path.name} 重复")
                loaded.bundle = None
    for loaded in sources.values():
        if loaded.bundle is None:
            continue
        for index, step in enumerate(loaded.bundle.template.steps):
            if step.start_sop is not None and step.start_sop not in ids:
                loaded.add(("steps", index, "start_sop"), "SOP017", f"start_sop 指向的模板不存在：{step.start_sop}")
                loaded.bundle = None
    bundles = {s.bundle.id: s.bundle for s in sources.values() if s.bundle is not None}
    for loaded in sources.values():
        problems.extend(loaded.problems)
    return FolderLoad(bundles, policy, tags, sorted(problems), sources)
