"""SOP exit rules: when an enrolment ends because its subject no longer fits (stage, level, tag, deletion)."""

from __future__ import annotations

from scrm.audience import ContactFacts, GroupFacts
from scrm.sop.spec import Exit


def contact_exit_reason(rule: Exit, facts: ContactFacts) -> str | None:
    """Why a contact leaves the SOP now (an ``exit`` condition holds), or None."""
    if rule.stage and facts.stage in rule.stage:
        return f"stage:{facts.stage}"
    if rule.intent_level and facts.intent_level in rule.intent_level:
        return f"intent_level:{facts.intent_level}"
    for tag in rule.tags_added:
        if tag in facts.tags:
            return f"tag:{tag}"
    if rule.contact_deleted and not facts.relation_live:
        return "contact_deleted"
    return None


def group_exit_reason(rule: Exit, facts: GroupFacts) -> str | None:
    if rule.group_dismissed and not facts.active:
        return "group_dismissed"
    return None
