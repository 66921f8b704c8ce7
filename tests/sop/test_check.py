"""``lianyi sop check``: broken templates with their exact ``file:line:col code``, injection, the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.cli.sop import sop
from bot.settings import BUNDLED_SOP_DIR
from scrm.folder_check import check_folder, check_path
from scrm.sop.check import CODES, analyse

NOW = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)  # Friday 10:00 in Shanghai
TAGS = "意向: [试驾, 价格]\n状态: [已试驾]\n车主: [试驾]\n"  # 试驾 is in two groups: bare use is ambiguous

BASE = """\
id: t_case
name: 测试模板
kind: contact
trigger:
  event: contact.added
steps:
  - immediately: true
    private_message:
      text: 您好
"""
GROUP = """\
id: g_case
name: 车友群推送
kind: group
trigger:
  cron: "0 18 * * 5"
steps:
  - group_message:
      text: 大家周末愉快
"""


def _text(text: str) -> str:
    """BASE with another private_message text (line 9 holds ``text:``)."""
    return BASE.replace("      text: 您好\n", f"      text: {text}\n")


def _step(line: str) -> str:
    """BASE with the first step's timing line (line 7) replaced."""
    return BASE.replace("  - immediately: true\n", f"  - {line}\n")


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def found(folder: Path) -> list[str]:
    return [
        f"{Path(p.path).relative_to(folder).as_posix()}:{p.line}:{p.col} {p.code}"
        for p in check_folder(folder, now=NOW)
    ]


# (case, files besides tags.yaml, every expected ``file:line:col code``)
BROKEN: list[tuple[str, dict[str, str], list[str]]] = [
    ("yaml_mapping_in_value", {"t.yaml": "id: t_case\nname: a: b\n"}, ["t.yaml:2:8 SOP001"]),
    ("yaml_tab_indent", {"t.yaml": "id: t_case\nsteps:\n\t- end: true\n"}, ["t.yaml:3:1 SOP001"]),
    ("yaml_open_quote", {"t.yaml": "id: t_case\nname: '测试\n"}, ["t.yaml:3:1 SOP001"]),
    ("yaml_not_a_mapping", {"t.yaml": "- id: t_case\n"}, ["t.yaml:1:1 SOP001"]),
    ("unknown_top_key", {"t.yaml": BASE.replace("steps:", "stpes:")}, ["t.yaml:1:1 SOP003", "t.yaml:6:1 SOP002"]),
    (
        "unknown_step_key",
        {"t.yaml": BASE.replace("    private_message:", "    privte_message:")},
        ["t.yaml:8:5 SOP002"],
    ),
    ("missing_name", {"t.yaml": BASE.replace("name: 测试模板\n", "")}, ["t.yaml:1:1 SOP003"]),
    ("silent_without_days", {"t.yaml": BASE.replace("contact.added", "contact.silent")}, ["t.yaml:4:1 SOP003"]),
    ("bad_kind", {"t.yaml": BASE.replace("kind: contact", "kind: person")}, ["t.yaml:3:7 SOP004"]),
    ("unknown_event", {"t.yaml": BASE.replace("contact.added", "contact.add")}, ["t.yaml:5:10 SOP004"]),
    (
        "priority_too_high",
        {"t.yaml": BASE.replace("kind: contact", "kind: contact\npriority: 200")},
        ["t.yaml:4:11 SOP004"],
    ),
    ("bad_template_id", {"t.yaml": BASE.replace("id: t_case", "id: T-Case")}, ["t.yaml:1:5 SOP004"]),
    ("bad_duration", {"t.yaml": _step("after: 3x")}, ["t.yaml:7:12 SOP005"]),
    ("bad_cron", {"t.yaml": GROUP.replace("0 18 * * 5", "0 25 * * *")}, ["t.yaml:5:9 SOP006"]),
    ("bad_time", {"t.yaml": _step('at: "25:00"')}, ["t.yaml:7:9 SOP007"]),
    ("bad_weekday", {"t.yaml": _step("weekday: [funday]")}, ["t.yaml:7:5 SOP007"]),
    (
        "bad_date",
        {"t.yaml": BASE.replace("  event: contact.added", '  dates: [2026-13-01]\n  at: "10:00"')},
        ["t.yaml:5:3 SOP007"],
    ),
    ("unknown_tag", {"t.yaml": BASE + "  - add_tags: [已下订]\n"}, ["t.yaml:10:16 SOP008"]),
    ("ambiguous_tag", {"t.yaml": BASE + "exit:\n  tags_added: [意向/价格, 试驾]\n"}, ["t.yaml:11:23 SOP008"]),
    ("unknown_variable", {"t.yaml": _text("|\n        您好\n        {{ contct.name }}")}, ["t.yaml:11:9 SOP009"]),
    ("jinja_syntax", {"t.yaml": _text('"{% if contact.name %}您好"')}, ["t.yaml:9:13 SOP010"]),
    ("unknown_filter", {"t.yaml": _text('"{{ contact.name | upperr }}"')}, ["t.yaml:9:13 SOP010"]),
    ("when_syntax", {"t.yaml": _step('when: "contact.score >"')}, ["t.yaml:7:11 SOP010"]),
    ("unknown_field", {"t.yaml": _text("|\n        您好\n\n        {{ contact.nmae }}")}, ["t.yaml:12:9 SOP011"]),
    (
        "undefined_in_file",
        {"t.yaml": _text("null\n      file: msg/a.j2"), "msg/a.j2": "您好\n{{ dealer.answers.warranty }}\n"},
        ["msg/a.j2:2:1 SOP011"],
    ),
    ("text_too_long", {"t.yaml": _text("\"{{ '好' * 1400 }}\"")}, ["t.yaml:9:13 SOP012"]),
    (
        "yaml_attachments_over_nine",
        {"t.yaml": _text("您好\n      attachments:\n" + '        - link: {title: 手册, url: "https://x.cn"}\n' * 10)},
        ["t.yaml:10:7 SOP013"],
    ),
    (
        "attach_calls_over_nine",
        {
            "t.yaml": _text("null\n      file: msg/a.j2"),
            "msg/a.j2": "看车\n" + "".join(f'{{{{ attach_image("https://x.cn/{i}.png") }}}}\n' for i in range(10)),
        },
        ["msg/a.j2:11:1 SOP013"],
    ),
    ("step_at_in_quiet_hours", {"t.yaml": _step('at: "22:30"')}, ["t.yaml:7:9 SOP014"]),
    ("cron_only_in_quiet_hours", {"t.yaml": GROUP.replace("0 18 * * 5", "0 23 * * *")}, ["t.yaml:5:9 SOP014"]),
    (
        "injection_in_file",
        {"t.yaml": _text("null\n      file: a.j2"), "a.j2": "好\n{{ ''.__class__ }}\n"},
        ["a.j2:2:1 SOP015"],
    ),
    ("duplicate_step_id", {"t.yaml": BASE + "  - id: s1\n    end: true\n"}, ["t.yaml:10:9 SOP016"]),
    ("duplicate_template_id", {"a.yaml": BASE, "b.yaml": BASE}, ["b.yaml:1:5 SOP016"]),
    ("unknown_start_sop", {"t.yaml": BASE + "  - start_sop: nope_sop\n"}, ["t.yaml:10:16 SOP017"]),
    ("two_actions", {"t.yaml": _step("immediately: true\n    end: true")}, ["t.yaml:7:5 SOP018"]),
    ("immediately_with_after", {"t.yaml": _step("immediately: true\n    after: 2h")}, ["t.yaml:7:5 SOP018"]),
    ("missing_file", {"t.yaml": _text("null\n      file: nurture/none.j2")}, ["t.yaml:10:13 SOP019"]),
    ("file_outside_folder", {"t.yaml": _text("null\n      file: ../outside.j2")}, ["t.yaml:10:13 SOP019"]),
    (
        "by_channel_without_default",
        {"t.yaml": BASE.replace("      text: 您好", "      by_channel: hello"), "hello/qr.j2": "您好"},
        ["t.yaml:9:19 SOP019"],
    ),
    (
        "bad_regex",
        {"t.yaml": BASE.replace("  event: contact.added", '  event: message.keyword\n  regex: "([a-z"')},
        ["t.yaml:6:10 SOP020"],
    ),
    (
        "filter_for_other_event",
        {"t.yaml": BASE.replace("  event: contact.added", "  event: contact.added\n  keywords: [价格]")},
        ["t.yaml:6:3 SOP021"],
    ),
    (
        "group_action_in_contact_sop",
        {"t.yaml": BASE.replace("private_message", "group_message")},
        ["t.yaml:8:5 SOP021"],
    ),
    ("group_audience_in_contact_sop", {"t.yaml": BASE + 'audience:\n  name: "*车友群*"\n'}, ["t.yaml:11:3 SOP021"]),
    (
        "welcome_outside_contact_added",
        {"t.yaml": BASE.replace("contact.added", "lead.lost").replace("private_message", "welcome")},
        ["t.yaml:8:5 SOP021"],
    ),
    ("policy_unknown_key", {"t.yaml": BASE, "policy.yaml": "caps:\n  per_dya: 3\n"}, ["policy.yaml:2:3 SOP022"]),
    (
        "event_and_cron",
        {"t.yaml": BASE.replace("  event: contact.added", '  event: contact.added\n  cron: "0 10 * * 5"')},
        ["t.yaml:4:1 SOP023"],
    ),
    ("text_and_file", {"t.yaml": _text("您好\n      file: a.j2")}, ["t.yaml:8:5 SOP024"]),
    (
        "duplicate_yaml_key",
        {"t.yaml": BASE.replace("name: 测试模板", "name: 测试模板\nname: 再次")},
        ["t.yaml:3:1 SOP025"],
    ),
    ("bad_tags_file", {"t.yaml": BASE, "tags.yaml": "意向: [试驾]\n状态: {a: 1}\n"}, ["tags.yaml:2:1 SOP026"]),
    ("bad_intent_file", {"t.yaml": BASE, "intent.yaml": "intents:\n  prise: {}\n"}, ["intent.yaml:2:3 SOP027"]),
    ("bad_handoff_level", {"t.yaml": BASE, "handoff.yaml": "handoff:\n  levels: [S]\n"}, ["handoff.yaml:2:3 SOP028"]),
    (
        "bad_handoff_ladder",
        {
            "t.yaml": BASE,
            "handoff.yaml": "sla:\n  accept_ladder:\n    - {after: 5, action: remind}\n"
            "    - {after: 1, action: pool}\n",
        },
        ["handoff.yaml:2:3 SOP028"],
    ),
    (
        "bad_handoff_action",
        {"t.yaml": BASE, "handoff.yaml": "sla:\n  contact_ladder: [{after: 1, action: fire}]\n"},
        ["handoff.yaml:2:39 SOP028"],
    ),
    ("bad_handoff_timezone", {"t.yaml": BASE, "handoff.yaml": "timezone: Mars/Olympus\n"}, ["handoff.yaml:1:1 SOP028"]),
    (
        "loop_over_render_budget",
        {
            "t.yaml": BASE.replace("text: 您好", "file: bomb.j2"),
            "bomb.j2": "您好\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        },
        ["bomb.j2:2:1 SOP029"],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [(f, e) for _, f, e in BROKEN], ids=[c for c, _, _ in BROKEN])
def test_broken_template_is_reported_at_its_position(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    write(tmp_path, {"tags.yaml": TAGS, **files})
    assert found(tmp_path) == expected


def test_the_broken_cases_cover_every_code() -> None:
    codes = {e.split()[-1] for _, _, expected in BROKEN for e in expected}
    assert len(BROKEN) >= 25
    assert codes == set(CODES)


INJECTIONS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% if false %}{{ lipsum.__globals__.os.system('id') }}{% endif %}",
    "{{ lipsum | attr('__globals__') }}",
    "{{ (lipsum | attr('_' ~ '_globals__')).os }}",
    "{{ joiner.__init__.__globals__.__builtins__ }}",
    "{{ ''['__class__'] }}",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_template_injection_is_refused_at_check_time(tmp_path: Path, text: str) -> None:
    quoted = '"' + text.replace('"', '\\"') + '"'
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": _text(quoted)})
    problems = check_folder(tmp_path, now=NOW)
    assert [(p.line, p.col, p.code) for p in problems] == [(9, 13, "SOP015")]


def test_static_analysis_names_what_the_injection_reaches() -> None:
    assert analyse("好\n{{ cycler.__init__.__globals__ }}") == [
        (2, "SOP015", "模板不能访问 __init__、__globals__（沙箱禁止，疑似注入）")
    ]
    assert analyse("{{ contact.name }}{{ now.hour }}{{ dealer.answers.price | default('') }}") == []


def test_a_valid_folder_passes(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "tags.yaml": TAGS,
            "nurture.yaml": BASE
            + '  - after: 1d\n    at: "10:00"\n    private_message:\n      file: nurture/day1.j2\n'
            + "  - after: 3d\n    add_tags: [意向/试驾]\n"
            + "  - start_sop: g_case_two\n",
            "group.yaml": GROUP.replace("g_case", "g_case_two")
            .replace("kind: group", "kind: contact")
            .replace('  cron: "0 18 * * 5"', "  event: lead.lost")
            .replace("group_message", "private_message"),
            "nurture/day1.j2": '{% include "_hi.j2" %}\n{{ attach_link("预约试驾", "https://x.cn/td") }}',
            "nurture/_hi.j2": "{{ contact.name }}，早上好",
        },
    )
    assert check_folder(tmp_path, now=NOW) == []


def test_unknown_key_message_has_a_did_you_mean(tmp_path: Path) -> None:
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": BASE.replace("steps:", "stpes:")})
    messages = [p.message for p in check_folder(tmp_path, now=NOW) if p.code == "SOP002"]
    assert messages == ["未知字段 stpes，是不是 steps？"]


def test_unknown_key_without_a_close_match_lists_the_fields(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"tags.yaml": TAGS, "t.yaml": BASE.replace("    private_message:", "    xyz: 1\n    private_message:")},
    )
    (problem,) = check_folder(tmp_path, now=NOW)
    assert problem.code == "SOP002"
    assert problem.message.startswith("未知字段 xyz，可用字段：")
    assert "private_message" in problem.message


def test_problem_prints_as_file_line_col_code_message(tmp_path: Path) -> None:
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": BASE.replace("contact.added", "contact.add")})
    (problem,) = check_folder(tmp_path, now=NOW)
    assert str(problem) == f"{tmp_path / 't.yaml'}:5:10 SOP004 未知的触发事件 contact.add，是不是 contact.added？"


def test_checking_one_file_reports_only_that_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "tags.yaml": TAGS,
            "good.yaml": BASE + "  - start_sop: other_sop\n",
            "other.yaml": BASE.replace("t_case", "other_sop").replace("kind: contact", "kind: person"),
        },
    )
    problems, templates = check_path(tmp_path / "good.yaml", now=NOW)
    assert (problems, templates) == ([], 1)
    problems, templates = check_path(tmp_path, now=NOW)
    assert [p.code for p in problems] == ["SOP004"]
    assert templates == 2


# ---- the CLI ----------------------------------------------------------------------------------------------


def test_cli_prints_problems_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": BASE.replace("steps:", "stpes:")})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(sop, ["check", "."])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "t.yaml:1:1 SOP003 缺少必填字段 steps",
        "t.yaml:6:1 SOP002 未知字段 stpes，是不是 steps？",
        "发现 2 个问题",
    ]


def test_cli_passes_a_good_file_and_counts_templates(tmp_path: Path) -> None:
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": BASE, "u.yaml": BASE.replace("t_case", "u_case")})
    runner = CliRunner()
    folder = runner.invoke(cli, ["sop", "check", str(tmp_path)])
    assert (folder.exit_code, folder.output) == (0, "检查通过：2 个模板\n")
    one = runner.invoke(cli, ["sop", "check", str(tmp_path / "t.yaml")])
    assert (one.exit_code, one.output) == (0, "检查通过：1 个模板\n")


def test_cli_defaults_to_lianyi_sop_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": BASE.replace("kind: contact", "kind: person")})
    monkeypatch.setenv("LIANYI_SOP_DIR", str(tmp_path))
    result = CliRunner().invoke(sop, ["check"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "发现 1 个问题"
    assert "t.yaml:3:7 SOP004 kind 的取值无效" in result.output


def test_cli_rejects_a_missing_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(sop, ["check", str(tmp_path / "nope")])
    assert result.exit_code == 2


def test_shipped_templates_pass() -> None:
    problems, templates = check_path(BUNDLED_SOP_DIR, now=NOW)
    assert [str(p) for p in problems] == []
    assert templates >= 8
