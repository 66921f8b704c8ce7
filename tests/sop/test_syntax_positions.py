"""Jinja2 syntax errors in Chinese at their real ``line:col`` (``sop check``), and SOP011 listing real fields."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scrm.sop.check import analyse, check_folder
from scrm.templating.compiled import SopRenderError, syntax_error
from scrm.templating.syntax import explain
from tests.sop.test_check import BASE, TAGS, _text, write

NOW = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)

# (template, line, col, message)
SYNTAX: list[tuple[str, int, int, str]] = [
    ("您好\n{% if contact.name %}王先生", 2, 1, "{% if %} 没有关闭：模板结束前缺少 {% endif %}"),
    ("{% if a %}{% if b %}{% endif %}\n好", 1, 1, "{% if %} 没有关闭：模板结束前缺少 {% endif %}"),
    ("您好，{{ contact.name ", 1, 4, "{{ 没有闭合：缺少 }}"),
    ("好\n  {% set x = 1 ", 2, 3, "{% 没有闭合：缺少 %}"),
    ("好 {# 备注", 1, 3, "注释 {# 没有闭合：缺少 #}"),
    ("一\n二 {% iff contact.name %}{% endif %}", 2, 6, "未知标签 {% iff %}，是不是 if？"),
    (
        "{% for t in contact.tags %}{% endif %}",
        1,
        31,
        "{% endif %} 与前面的 {% for %} 不配对：应先用 {% endfor %} 关闭它",
    ),
    ("好\n{% endif %}", 2, 4, "多余的 {% endif %}：前面没有与它配对的开始标签"),
    ("{{ contact.name }", 1, 17, "这里不应出现 }"),
    ("{{ mask_phone(1, }}", 1, 18, "这里不应出现 }，应为 )"),
    ('您好 {{ "王先生 }}', 1, 7, '字符串没有闭合：缺少配对的引号 "'),
    ("{{ contact.name staff.name }}", 1, 17, "这里应为 }}，却是 staff"),
    ("一\n二\n三{{ contact.name | }}", 3, 20, "这里应为 名称，却是 }}"),
    ("{{ }}", 1, 4, "这里缺少表达式（变量或值），却是 }}"),
    ("{% %}", 1, 4, "{% 后缺少标签名（如 if、for、set）"),
    ("{{ contact.score $ 1 }}", 1, 18, "这里不能使用字符 $"),
    ("好\n好 {{ contact.name }}{{ staff.name | upperr }}", 2, 21, "没有名为 upperr 的过滤器，是不是 upper？"),
]


@pytest.mark.parametrize(("text", "line", "col", "message"), SYNTAX)
def test_syntax_errors_are_chinese_at_their_column(text: str, line: int, col: int, message: str) -> None:
    env = ImmutableSandboxedEnvironment()
    env.filters["mask_phone"] = str
    with pytest.raises(TemplateSyntaxError) as info:
        env.compile(env.parse(text))
    found = explain(env, text, info.value)
    assert (found.line, found.col, found.message) == (line, col, message)


def test_sop_check_places_syntax_errors_in_files_and_yaml(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "tags.yaml": TAGS,
            "a.yaml": _text("null\n      file: msg/a.j2"),
            "msg/a.j2": "您好\n  今天 {% iff contact.name %}x{% endif %}\n",
            "b.yaml": _text("|\n        您好\n        欢迎 {{ contact.name }\n").replace("t_case", "b_case"),
            "c.yaml": _text('"好 {{ contact.name | upperr }}"').replace("t_case", "c_case"),
            "d.yaml": _text('"你好 {% for t in contact.tags %}"').replace("t_case", "d_case"),
        },
    )
    found = [
        (Path(p.path).relative_to(tmp_path).as_posix(), p.line, p.col, p.code, p.message)
        for p in check_folder(tmp_path, now=NOW)
    ]
    assert found == [
        ("b.yaml", 11, 28, "SOP010", "Jinja2 语法错误：这里不应出现 }"),
        ("c.yaml", 9, 16, "SOP010", "没有名为 upperr 的过滤器，是不是 upper？"),
        ("d.yaml", 9, 17, "SOP010", "Jinja2 语法错误：{% for %} 没有关闭：模板结束前缺少 {% endfor %}"),
        ("msg/a.j2", 2, 9, "SOP010", "Jinja2 语法错误：未知标签 {% iff %}，是不是 if？"),
    ]


def test_when_expression_syntax_error_points_inside_the_expression(tmp_path: Path) -> None:
    step = BASE.replace("  - immediately: true\n", '  - immediately: true\n    when: "contact.score > 5 )"\n')
    write(tmp_path, {"tags.yaml": TAGS, "t.yaml": step})
    problems = check_folder(tmp_path, now=NOW)
    assert [(p.line, p.col, p.code, p.message) for p in problems] == [
        (8, 30, "SOP010", "Jinja2 语法错误：这里不应出现 )")
    ]


def test_render_time_syntax_error_is_chinese_at_the_real_line() -> None:
    env = ImmutableSandboxedEnvironment()
    source = "一\n二\n{% if x %}三"
    with pytest.raises(TemplateSyntaxError) as info:
        env.from_string(source)
    error = syntax_error(info.value, "msg.j2", env)
    assert isinstance(error, SopRenderError)
    assert (error.file, error.line, error.message_cn) == (
        "msg.j2",
        3,
        "Jinja2 语法错误：{% if %} 没有关闭：模板结束前缺少 {% endif %}",
    )


# ---- SOP011: only real fields ----------------------------------------------------------------------------


def test_unknown_field_lists_only_real_fields() -> None:
    [(line, code, message)] = analyse("{{ dealer.zzz }}")
    assert (line, code) == (1, "SOP011")
    assert message == "dealer 没有字段 zzz；可用字段：address、answers、city、code、hours、name、phone"
    for method in ("clear", "copy", "fromkeys", "items", "pop", "keys", "values", "get"):
        assert method not in message


def test_unknown_field_of_now_lists_its_data_fields() -> None:
    [(_line, code, message)] = analyse("{{ now.zzz }}")
    assert code == "SOP011"
    assert message == "now 没有字段 zzz；可用字段：day、hour、microsecond、minute、month、second、tzinfo、year"


def test_did_you_mean_suggests_a_field_not_a_method() -> None:
    [(_line, _code, message)] = analyse("{{ contact.itams }}")
    assert "items" not in message
    assert analyse("{{ contact.nmae }}") == [(1, "SOP011", "contact 没有字段 nmae，是不是 name？")]


def test_dict_and_datetime_methods_are_still_allowed() -> None:
    assert analyse("{{ contact.get('name') }}{{ dealer.answers.items() | list }}{{ now.weekday() }}") == []
