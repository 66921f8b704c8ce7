"""``lianyi campaign check``: every problem of a campaign file at ``file:line:col``, in Chinese.

The file is validated as :class:`~scrm.campaigns.spec.CampaignSpec` first; then every Jinja2 text of its
content (``text``, and the templated fields of its attachments) is analysed as ``sop check`` analyses SOP
texts (:func:`scrm.templating.analysis.analyse_positioned`: syntax errors with their column, unknown variables and
fields with a did-you-mean, sandbox escapes), each finding placed on the line of the YAML file where that
template line sits. A content that passes is rendered against the sample context, and a failure there is
reported at the start of ``content``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scrm.campaigns.content import check_content
from scrm.campaigns.spec import CampaignFileError, CampaignSpec, load_campaign_file
from scrm.config_file import RuleProblem
from scrm.problems import Loc
from scrm.templating.analysis import analyse_positioned
from scrm.yaml_positions import SourceMap, parse_yaml

# what a campaign's content sees besides the SOP variables (scrm.campaigns.content)
CAMPAIGN_VARIABLES = {"campaign": frozenset({"code", "name"})}


def check_campaign_file(path: str | Path) -> tuple[CampaignSpec | None, list[RuleProblem]]:
    """The spec of ``path`` (None when it cannot be read) and every problem of the file, by position."""
    try:
        spec = load_campaign_file(path)
    except CampaignFileError as exc:
        return None, list(exc.problems)
    document, _ = parse_yaml(Path(path).read_text(encoding="utf-8"))
    problems = _content_problems(document.data, document.source)
    if not problems:
        rendered = check_content(spec.content)
        if rendered is not None:
            start = document.source.locate(("content",))
            problems.append(RuleProblem(start.line, start.col, rendered.message_cn))
    return spec, sorted(problems, key=lambda p: (p.line, p.col))


def _content_problems(data: Any, source: SourceMap) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    for loc, text in _texts(data):
        for line, col, _code, message in analyse_positioned(text, extra_variables=CAMPAIGN_VARIABLES):
            mark = source.text_line(loc, line, col)
            problems.append(RuleProblem(mark.line, mark.col, message))
    return problems


def _texts(data: Any) -> Iterator[tuple[Loc, str]]:
    """Every Jinja2 text of the content, with its path in the YAML document."""
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, dict):
        return
    if isinstance(content.get("text"), str):
        yield ("content", "text"), content["text"]
    attachments = content.get("attachments")
    for index, attachment in enumerate(attachments if isinstance(attachments, list) else []):
        for kind, body in attachment.items() if isinstance(attachment, dict) else ():
            for key, value in body.items() if isinstance(body, dict) else ():
                if isinstance(value, str) and "{" in value:
                    yield ("content", "attachments", index, kind, key), value
