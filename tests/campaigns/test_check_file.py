"""``lianyi campaign check``: typos inside the content at their ``line:col`` of the YAML file, with a did-you-mean."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bot.cli import cli
from scrm.campaigns.check import check_campaign_file

HEAD = """\
code: typo_push
name: 错字测试
chat_type: group
audience: {dealer: [BJ001]}
"""
TAIL = "schedule: {now: true}\n"


def _problems(tmp_path: Path, content: str) -> list[tuple[int, int, str]]:
    file = tmp_path / "c.yaml"
    file.write_text(HEAD + content + TAIL, encoding="utf-8")
    _spec, problems = check_campaign_file(file)
    return [(p.line, p.col, p.message) for p in problems]


def test_unknown_field_in_a_block_text_is_on_its_file_line(tmp_path: Path) -> None:
    content = "content:\n  text: |\n    {{ group.name }}的朋友们：\n    {{ contact.nmae }}，本周六试驾日\n"
    assert _problems(tmp_path, content) == [(8, 5, "contact 没有字段 nmae，是不是 name？")]


def test_unknown_filter_and_variable_with_did_you_mean(tmp_path: Path) -> None:
    content = (
        'content:\n  text: "{{ dealer.name | upperr }}欢迎"\n  attachments:\n'
        '    - link: {title: 报名, url: "https://example.com/{{ dealr.code }}"}\n'
    )
    assert _problems(tmp_path, content) == [
        (6, 9, "没有名为 upperr 的过滤器，是不是 upper？"),
        (8, 30, "未知变量 dealr，是不是 dealer？"),
    ]


def test_syntax_error_in_content_has_its_column(tmp_path: Path) -> None:
    content = "content:\n  text: |\n    第一行\n    欢迎 {% if group.name %}{{ group.name }}\n"
    assert _problems(tmp_path, content) == [(8, 8, "Jinja2 语法错误：{% if %} 没有关闭：模板结束前缺少 {% endif %}")]


def test_campaign_variable_is_known(tmp_path: Path) -> None:
    assert _problems(tmp_path, 'content:\n  text: "{{ campaign.name }}：{{ group.name }}"\n') == []
    assert _problems(tmp_path, 'content:\n  text: "{{ campaign.nmae }}"\n') == [
        (6, 9, "campaign 没有字段 nmae，是不是 name？")
    ]


def test_the_cli_prints_file_line_col(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(HEAD + "content:\n  text: |\n    好\n    {{ contact.nmae }}\n" + TAIL, encoding="utf-8")
    result = CliRunner().invoke(cli, ["campaign", "check", str(file)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"{file}:8:5 contact 没有字段 nmae，是不是 name？"]
