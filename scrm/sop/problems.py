"""SOP templates' side of problem reporting: their string patterns in words, and where a template-level
consistency error really is (:func:`refine_loc`). The code table and the messages live in :mod:`scrm.problems`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import ErrorDetails

from scrm import problems
from scrm.problems import Loc
from scrm.sop.spec import ACTIONS, CONTACT_ACTIONS, EVENTS, GROUP_ACTIONS, STEP_ID, TEMPLATE_ID, SopTemplate

SOP_PATTERNS_CN: Mapping[str, str] = {
    TEMPLATE_ID.pattern: "只能用小写字母、数字和下划线，以字母开头，2–64 个字符",
    STEP_ID.pattern: "只能用小写字母、数字和下划线，1–32 个字符",
}


def error_message(error: ErrorDetails) -> str:
    """A Chinese message for one pydantic error of :class:`~scrm.sop.spec.SopTemplate`."""
    return problems.error_message(error, SopTemplate, SOP_PATTERNS_CN)


def refine_loc(error: ErrorDetails, raw: Mapping[str, Any]) -> tuple[Loc, Mapping[str, Any]]:
    """Where a template-level error really is: the spec raises its consistency errors on the whole template
    (``loc`` empty), so find the audience key or the step they are about in ``raw``. Returns (loc, ctx)."""
    loc, ctx = tuple(error["loc"]), dict(error.get("ctx") or {})
    if loc or error["type"] not in ("kind_mismatch", "duplicate_step"):
        return loc, ctx
    key = ctx.pop("key", None)
    audience = raw.get("audience")
    if isinstance(key, str) and isinstance(audience, dict) and key in audience:
        return ("audience",), {**ctx, "key": key}
    kind, trigger = raw.get("kind"), raw.get("trigger")
    event = trigger.get("event") if isinstance(trigger, dict) else None
    listed = raw.get("steps")
    steps: list[Any] = listed if isinstance(listed, list) else []
    if error["type"] == "kind_mismatch":
        if isinstance(event, str) and kind not in EVENTS.get(event, frozenset({kind})):
            return ("kind",), ctx
        allowed = GROUP_ACTIONS if kind == "group" else CONTACT_ACTIONS
        for index, step in enumerate(steps):
            actions = [a for a in ACTIONS if isinstance(step, dict) and step.get(a) is not None]
            for action in actions:
                if action not in allowed or (action == "welcome" and event != "contact.added"):
                    return ("steps", index, action), ctx
        return loc, ctx
    seen: set[str] = set()
    for index, step in enumerate(steps):
        step_id = str(step.get("id") or f"s{index + 1}") if isinstance(step, dict) else f"s{index + 1}"
        if step_id in seen:
            return (("steps", index, "id") if isinstance(step, dict) and step.get("id") else ("steps", index)), ctx
        seen.add(step_id)
    return loc, ctx
