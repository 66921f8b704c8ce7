"""A dealer's ``answers``: topic → the dealer's own reply, quoted by keyword-reply templates as
``{{ dealer.answers.price }}`` (the shipped ``group_keyword_*.yaml`` read ``price``, ``test_drive`` and
``address``; a topic of your own works in your own templates).

In YAML it is a mapping::

    answers:
      price: 本月全系享厂家补贴最高 2 万元……
      test_drive: 试驾车每天都有，提前一天预约即可。

In a CSV cell (column ``answers``, or 话术 / 门店答复) it is ``topic=text`` entries separated by ``;`` or line
breaks (``price=本月补贴 2 万元；置换另有补贴; test_drive=每天可试驾``; inside a text write the full-width
``；``), or a JSON object (``{"price": "…"}``). A topic is a lowercase name (letters, digits, ``_``, starting
with a letter) so that ``dealer.answers.<topic>`` works in a template; a text is 1–1,000 characters.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scrm.errors import LianyiError

TOPIC = re.compile(r"[a-z][a-z0-9_]{0,31}")
ANSWER_MAX = 1000
TOPICS_MAX = 50
_ENTRY_SPLIT = re.compile(r"[;\n]")


class AnswersProblem(LianyiError):
    """One bad topic or text; ``topic`` names the entry (None: the whole value)."""

    def __init__(self, message: str, topic: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.topic = topic


def clean_answers(raw: Any) -> dict[str, str]:
    """``raw`` (a mapping, or a CSV cell's text) as the stored ``answers``; raises :class:`AnswersProblem`."""
    if isinstance(raw, str):
        raw = _from_cell(raw)
    if not isinstance(raw, dict):
        raise AnswersProblem("应为“话题: 答复”的映射（如 price: 本月优惠……）")
    if len(raw) > TOPICS_MAX:
        raise AnswersProblem(f"最多 {TOPICS_MAX} 个话题（现在 {len(raw)} 个）")
    answers: dict[str, str] = {}
    for topic, text in raw.items():
        name = str(topic).strip()
        if not TOPIC.fullmatch(name):
            raise AnswersProblem(
                f"话题 “{topic}” 无效：只能用小写字母、数字和 _，以字母开头（如 price、test_drive）", str(topic)
            )
        if not isinstance(text, str):
            raise AnswersProblem(f"话题 {name} 的答复应为文字", name)
        value = text.strip()
        if not value:
            raise AnswersProblem(f"话题 {name} 的答复不能为空", name)
        if len(value) > ANSWER_MAX:
            raise AnswersProblem(f"话题 {name} 的答复最多 {ANSWER_MAX} 个字符（现在 {len(value)} 个）", name)
        answers[name] = value
    return answers


def _from_cell(cell: str) -> dict[str, Any]:
    text = cell.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnswersProblem(f"JSON 格式错误（第 {exc.colno} 个字符附近）") from None
        if not isinstance(parsed, dict):
            raise AnswersProblem('JSON 应是一个对象，如 {"price": "……"}')
        return parsed
    entries: dict[str, Any] = {}
    for part in _ENTRY_SPLIT.split(text):
        if not part.strip():
            continue
        topic, sep, answer = part.partition("=")
        if not sep:
            raise AnswersProblem(f"“{part.strip()[:20]}” 缺少 =：每项写成 话题=答复，多项用 ; 分隔")
        if topic.strip() in entries:
            raise AnswersProblem(f"话题 {topic.strip()} 重复", topic.strip())
        entries[topic.strip()] = answer
    return entries
