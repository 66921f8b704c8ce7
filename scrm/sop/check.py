"""``lianyi sop check``: every problem of an SOP folder as ``file:line:col code message``.

:func:`check_folder` loads the folder (:func:`scrm.sop.source.load_folder`: YAML, schema, message files,
duplicate ids, ``start_sop`` targets, policy.yaml, tags.yaml) and then checks what loading cannot see:
tags against ``tags.yaml``, every Jinja2 text statically (syntax, unknown variables and fields, sandbox
escapes — refused even where rendering would never reach them, attachment counts), every message rendered
against the sample context (:data:`scrm.templating.context.SAMPLE_CONTEXT`), and steps or schedules that can only
ever fall in the policy's quiet hours. Positions are 1-based; a problem in inline ``text`` points at the
YAML line of the template line that failed.

Problem codes (stable; :data:`CODES`):

======  ===========================================================================================
SOP001  YAML syntax error, or the file is not one mapping (``a: b: c``, a Tab indent, an open quote)
SOP002  unknown key, with a did-you-mean (``stpes`` → ``未知字段 stpes，是不是 steps？``)
SOP003  missing required key, or a filter the event needs (``contact.silent`` without ``days``)
SOP004  bad value, type or choice (``kind: person``, ``priority: 200``, unknown trigger event)
SOP005  bad duration (``after: 3x``)
SOP006  bad cron expression (``cron: "0 25 * * *"``)
SOP007  bad time of day, weekday or date (``at: "25:00"``, ``weekday: [funday]``, ``dates: [2026-13-01]``)
SOP008  tag not in tags.yaml, or a bare tag name found in several groups
SOP009  unknown template variable (``{{ contct.name }}``)
SOP010  Jinja2 syntax error, unknown filter or test
SOP011  unknown field of a variable (``{{ contact.nmae }}``) or a failure rendering the sample context
SOP012  text over 4000 bytes (UTF-8) after rendering
SOP013  more than 9 attachments (YAML ``attachments`` plus ``attach_*`` calls)
SOP014  a step whose ``at`` lies in quiet hours, or a schedule that only fires in quiet hours (14 days)
SOP015  unsafe template: ``_``-attributes (``__class__``, ``__globals__``…), ``attr`` tricks, sandbox refusals
SOP016  duplicate template id (reported at the second file) or duplicate step id
SOP017  ``start_sop`` names no template of the folder
SOP018  step action or timing (no action, two actions, ``immediately`` with ``after``)
SOP019  message file missing, unreadable or outside the SOP folder; ``by_channel`` without default.j2
SOP020  bad regular expression
SOP021  key not allowed for this kind or event (``keywords`` on ``contact.added``, group action in a
        contact SOP, ``welcome`` outside ``contact.added``)
SOP022  policy.yaml problem
SOP023  trigger shape (neither or both of event and schedule; ``dates`` without ``at``)
SOP024  message shape (text, file and by_channel together; bad attachment; renders to nothing)
SOP025  duplicate YAML key (the later one would silently win)
SOP026  tags.yaml problem
SOP027  intent.yaml problem (YAML, schema, regex, unknown intent code; :func:`scrm.intent.rules.load_rules`)
SOP028  handoff.yaml problem (YAML, schema, levels, ladders, time zone; :func:`scrm.leads.rules.load_handoff_rules`)
SOP029  template over its render budget (:mod:`scrm.templating.budget`): more than 10000 loop iterations, range
        numbers, calls and items filters walk, output over 16384 characters, text bombs (``"x" * 10000000``),
        over 0.5 s
======  ===========================================================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scrm.config_file import ConfigFileError, RuleFile
from scrm.contact_policy import Policy
from scrm.problems import CODES, RENDER_ERROR_CODES, Loc, Problem
from scrm.sop.render import SopRenderer
from scrm.sop.source import FolderLoad, TemplateSource, load_folder
from scrm.templating.analysis import analyse, analyse_positioned
from scrm.templating.context import SAMPLE_CONTEXT
from scrm.timing import cron_fires_between
from scrm.yaml_positions import SourceMap

__all__ = ["CODES", "Problem", "analyse", "analyse_positioned", "check_folder", "check_loaded", "check_path"]

MESSAGE_ACTIONS = ("welcome", "private_message", "advisor_task", "group_message")
QUIET_LOOKAHEAD = timedelta(days=14)

# ---- one template -----------------------------------------------------------------------------------------


class _TemplateChecker:
    def __init__(self, loaded: TemplateSource, folder: Path, load: FolderLoad, now: datetime) -> None:
        self.loaded = loaded
        self.folder = folder
        self.load = load
        self.now = now
        self.source: SourceMap = loaded.source
        self.problems: list[Problem] = []

    def at(self, loc: Loc, code: str, message: str) -> None:
        mark = self.source.locate(loc)
        self.problems.append(Problem(self.loaded.shown, mark.line, mark.col, code, message))

    def in_text(self, loc: Loc, line: int, code: str, message: str, col: int = 1) -> None:
        mark = self.source.text_line(loc, line, col)
        self.problems.append(Problem(self.loaded.shown, mark.line, mark.col, code, message))

    def in_file(self, name: str, line: int, code: str, message: str, col: int = 1) -> None:
        self.problems.append(Problem(str(self.folder / name), max(line, 1), max(col, 1), code, message))

    def run(self) -> list[Problem]:
        raw = self.loaded.raw
        if not isinstance(raw, dict):
            return []
        for loc, ref in _tag_refs(raw):
            message = self.load.tags.problem(ref)
            if message is not None:
                self.at(loc, "SOP008", message)
        said: set[tuple[str, str]] = set()  # (code, step or file) the static analysis reported
        for loc, text, expression, attachments in _texts(raw):
            found = analyse_positioned(text, expression=expression, yaml_attachments=attachments)
            for line, col, code, message in found:
                self.in_text(loc, line, code, message, col)
                said.add((code, repr(loc[:2])))
        bundle = self.loaded.bundle
        if bundle is None:
            return self.problems
        for name, text in bundle.files.items():
            for line, col, code, message in analyse_positioned(text):
                self.in_file(name, line, code, message, col)
                said.add((code, name))
        positions = {(p.path, p.line, p.col) for p in self.problems}
        for error in SopRenderer(bundle).problems(SAMPLE_CONTEXT):
            code = RENDER_ERROR_CODES.get(error.code, "SOP011")
            if error.file is not None:
                self.in_file(error.file, error.line or 1, code, error.message_cn)
            else:
                self.in_text(error.loc, error.line or 1, code, error.message_cn)
            last = self.problems[-1]
            owner = error.file if error.file is not None else repr(error.loc[:2])
            if (last.path, last.line, last.col) in positions or (code, owner) in said:
                self.problems.pop()  # the static finding says it better (and says where)
        self._quiet_hours(self.load.policy)
        return self.problems

    def _quiet_hours(self, policy: Policy) -> None:
        assert self.loaded.bundle is not None
        template = self.loaded.bundle.template
        window = f"{policy.quiet_hours.start:%H:%M}–{policy.quiet_hours.end:%H:%M}"
        day = self.now.astimezone(policy.tz).date()
        for index, step in enumerate(template.steps):
            if step.at is None or not policy.quiet_for(step.kind):
                continue
            if policy.in_quiet_hours(datetime.combine(day, step.at, tzinfo=policy.tz)):
                message = f"第 {index + 1} 步定在 {step.at:%H:%M}，总在免打扰时段（{window}）内，只会被推迟"
                self.at(("steps", index, "at"), "SOP014", message)
        trigger = template.trigger
        if trigger.at is not None and policy.in_quiet_hours(datetime.combine(day, trigger.at, tzinfo=policy.tz)):
            message = f"发送时刻 {trigger.at:%H:%M} 在免打扰时段（{window}）内，只会被推迟"
            self.at(("trigger", "at"), "SOP014", message)
        if trigger.cron is not None:
            fires = cron_fires_between(trigger.cron, self.now, self.now + QUIET_LOOKAHEAD)
            if fires and all(policy.in_quiet_hours(fire) for fire in fires):
                message = f"cron {trigger.cron} 未来 14 天的触发时间都在免打扰时段（{window}）内"
                self.at(("trigger", "cron"), "SOP014", message)


def _names(value: Any) -> list[tuple[Loc, str]]:
    if isinstance(value, str):
        return [((), value)]
    if isinstance(value, list):
        return [((index,), item) for index, item in enumerate(value) if isinstance(item, str)]
    return []


def _tag_refs(raw: Mapping[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Every tag a template names, with its path (read from the raw YAML, valid or not)."""
    places: list[tuple[Loc, Any]] = []
    trigger, audience, exit_ = raw.get("trigger"), raw.get("audience"), raw.get("exit")
    if isinstance(trigger, dict):
        places.append((("trigger", "tags"), trigger.get("tags")))
    if isinstance(audience, dict):
        for group in ("tags", "group_tags"):
            condition = audience.get(group)
            if isinstance(condition, dict):
                places.extend(((("audience", group, k)), condition.get(k)) for k in ("any", "all", "none"))
    if isinstance(exit_, dict):
        places.append((("exit", "tags_added"), exit_.get("tags_added")))
    for index, step in _steps(raw):
        places.extend((("steps", index, key), step.get(key)) for key in ("add_tags", "remove_tags"))
    for loc, value in places:
        for sub, name in _names(value):
            yield (*loc, *sub), name


def _steps(raw: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    steps = raw.get("steps")
    if isinstance(steps, list):
        for index, step in enumerate(steps):
            if isinstance(step, dict):
                yield index, step


def _texts(raw: Mapping[str, Any]) -> Iterator[tuple[Loc, str, bool, int]]:
    """Every inline Jinja2 text of a template: (path, text, is an expression, YAML attachments beside it)."""
    for index, step in _steps(raw):
        where: Loc = ("steps", index)
        if isinstance(step.get("when"), str):
            yield (*where, "when"), step["when"], True, 0
        notify = step.get("notify_staff")
        if isinstance(notify, dict) and isinstance(notify.get("text"), str):
            yield (*where, "notify_staff", "text"), notify["text"], False, 0
        for action in MESSAGE_ACTIONS:
            message = step.get(action)
            if not isinstance(message, dict):
                continue
            attachments = message.get("attachments")
            count = len(attachments) if isinstance(attachments, list) else 0
            for key in ("text", "title"):
                if isinstance(message.get(key), str):
                    yield (*where, action, key), message[key], False, count if key == "text" else 0
            for position, attachment in enumerate(attachments if isinstance(attachments, list) else []):
                yield from _attachment_texts((*where, action, "attachments", position), attachment)


def _attachment_texts(loc: Loc, attachment: Any) -> Iterator[tuple[Loc, str, bool, int]]:
    if not isinstance(attachment, dict):
        return
    for kind, body in attachment.items():
        if isinstance(body, dict):
            for key, value in body.items():
                if isinstance(value, str) and "{" in value:
                    yield (*loc, kind, key), value, False, 0


# ---- folders ----------------------------------------------------------------------------------------------


def check_loaded(
    load: FolderLoad, folder: str | Path, *, now: datetime | None = None, rule_files: Sequence[RuleFile] = ()
) -> list[Problem]:
    """Every problem of an already loaded folder (its load problems included, and those of each of
    ``rule_files`` the folder has), sorted and without repeats."""
    moment = now or datetime.now(UTC)
    found = list(load.problems)
    for rule_file in rule_files:
        found.extend(_rule_file_problems(Path(folder), rule_file))
    for loaded in load.sources.values():
        found.extend(_TemplateChecker(loaded, Path(folder), load, moment).run())
    unique = {(p.path, p.line, p.col, p.code, p.message): p for p in found}
    return sorted(unique.values())


def _rule_file_problems(folder: Path, rule_file: RuleFile) -> list[Problem]:
    """Every problem of one rule file of the folder (e.g. SOP027 intent.yaml), when the folder has it."""
    path = folder / rule_file.name
    if not path.is_file():
        return []
    try:
        rule_file.load(path)
    except ConfigFileError as exc:
        return [Problem(str(path), p.line, p.col, rule_file.code, p.message) for p in exc.problems]
    return []


def check_folder(
    sop_dir: str | Path, *, now: datetime | None = None, rule_files: Sequence[RuleFile] = ()
) -> list[Problem]:
    """Every problem of the SOP folder ``sop_dir`` (empty list = all templates are good)."""
    return check_loaded(load_folder(sop_dir), sop_dir, now=now, rule_files=rule_files)


def check_path(
    path: str | Path, *, now: datetime | None = None, rule_files: Sequence[RuleFile] = ()
) -> tuple[list[Problem], int]:
    """Check a folder, or one template file in the context of its folder (policy, tags, other ids).
    Returns the problems and the number of templates checked."""
    target = Path(path)
    folder = target if target.is_dir() else target.parent
    load = load_folder(folder)
    problems = check_loaded(load, folder, now=now, rule_files=rule_files)
    if target.is_dir():
        return problems, len(load.sources)
    own = {target.resolve()}
    for loaded in load.sources.values():
        if loaded.path.resolve() == target.resolve() and loaded.bundle is not None:
            own.update((folder / name).resolve() for name in loaded.bundle.files)
    return [p for p in problems if Path(p.path).resolve() in own], 1
