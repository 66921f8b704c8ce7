"""handoff.yaml: the shipped file, per-dealer overrides, and reloading (a bad edit keeps the last good rules)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scrm.leads.rules import HandoffRules, HandoffRulesError, LadderAction, load_handoff_rules, rules_in
from scrm.leads.services import LeadServices
from scrm.services import Services

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates" / "handoff.yaml"


def test_the_shipped_file_says_what_the_defaults_say() -> None:
    shipped = load_handoff_rules(SHIPPED)
    assert shipped.model_dump() == HandoffRules().model_dump()


def test_dealer_overrides_replace_only_what_they_name() -> None:
    rules = HandoffRules.model_validate(
        {
            "sla": {"contact_minutes": 45},
            "dealers": {"SZ01": {"sla": {"accept_minutes": 10}, "routing": {"reach": "invite"}}},
        }
    )
    assert (rules.sla_for("SZ01").accept_minutes, rules.sla_for("SZ01").contact_minutes) == (10, 45)
    assert rules.sla_for("OTHER").accept_minutes == 5
    assert (rules.routing_for("SZ01").reach, rules.routing_for("SZ01").outside_hours) == ("invite", "wait")
    assert [r.action for r in rules.sla.ladder("accept")] == [
        LadderAction.REMIND,
        LadderAction.NOTIFY_MANAGER,
        LadderAction.REASSIGN,
    ]


def test_a_folder_without_the_file_uses_the_defaults_and_a_broken_one_raises(tmp_path: Path) -> None:
    assert rules_in(tmp_path) == HandoffRules()
    (tmp_path / "handoff.yaml").write_text("notify:\n  per_minute: 31\n", encoding="utf-8")
    with pytest.raises(HandoffRulesError) as caught:
        rules_in(tmp_path)
    assert [(p.line, p.col) for p in caught.value.problems] == [(2, 15)]
    assert "不能大于 30" in caught.value.problems[0].message


def _write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_edits_are_picked_up_and_a_bad_edit_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "handoff.yaml"
    _write(path, "sla: {accept_minutes: 7}\n", 1_000_000)
    services = LeadServices(tmp_path, recheck_seconds=0)
    assert services.rules().sla.accept_minutes == 7
    _write(path, "sla: {accept_minutes: 9}\n", 1_000_100)
    assert services.rules().sla.accept_minutes == 9
    _write(path, "sla: {accept_minutse: 3}\n", 1_000_200)
    assert services.rules().sla.accept_minutes == 9
    path.unlink()
    assert services.rules() == HandoffRules()


def test_each_process_builds_its_own_services_and_wires_lead_outcomes_back(tmp_path: Path) -> None:
    """No process-wide slot: two services objects are independent, and each one's lead and SOP services report
    their facts (a delivery, a lost lead, a tag an SOP step added) to that same object."""
    first, second = Services.build(tmp_path), Services.build(tmp_path, console_url="https://scrm.example.com/")
    assert first.leads is not None and second.leads is not None and first.leads is not second.leads
    assert first.leads.hooks is first and second.leads.hooks is second
    assert first.sop is not None and first.sop.hooks is first
    assert first.leads.lead_url(7) == "https://work.weixin.qq.com/leads/7"
    assert second.leads.lead_url(7) == "https://scrm.example.com/leads/7"
