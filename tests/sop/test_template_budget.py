"""Template safety: every render and ``sop check`` ends within the render budget (steps, output, text built,
time), with a precise problem at the template's file and line; a live welcome over budget is refused and audited,
never sent half-rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from scrm.campaigns.content import ContentRenderer, check_content
from scrm.campaigns.spec import CampaignContent
from scrm.commands import CommandKind
from scrm.db import SessionFactory, transaction
from scrm.models import AuditLog, Corp, Dealer, Staff
from scrm.sop.check import check_folder
from scrm.sop.render import SopRenderer, SopRenderError
from scrm.sop.spec import Message, SopTemplate, TemplateBundle
from scrm.sync import contacts
from scrm.templating.analysis import analyse_positioned
from scrm.templating.budget import OUTPUT_MAX_CHARS, STEPS_MAX, RenderBudget, RenderBudgetExceeded, render_streamed
from scrm.templating.context import SAMPLE_CONTEXT
from scrm.templating.sandbox import BudgetedSandbox
from tests.domain_support import WELCOME_ONLY_SOP, sop_process_services
from tests.sync.helpers import CORP, T0, commands, rows

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
TEMPLATE = """\
id: t_budget
name: 预算
kind: contact
trigger:
  event: contact.added
steps:
  - immediately: true
    private_message:
      file: bomb.j2
"""


def _bundle(files: dict[str, str]) -> TemplateBundle:
    raw = {
        "id": "t_budget",
        "name": "预算",
        "kind": "contact",
        "trigger": {"event": "contact.added"},
        "steps": [{"immediately": True, "private_message": {"file": "bomb.j2"}}],
    }
    return TemplateBundle(SopTemplate.model_validate(raw), raw, files, "t_budget.yaml")


def _render_error(files: dict[str, str], message: Message | None = None) -> SopRenderError:
    renderer = SopRenderer(_bundle(files))
    with pytest.raises(SopRenderError) as caught:
        renderer.render(message or Message(file="bomb.j2"), SAMPLE_CONTEXT)
    return caught.value


def _folder(tmp_path: Path, bomb: str) -> Path:
    (tmp_path / "t.yaml").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "bomb.j2").write_text(bomb, encoding="utf-8")
    return tmp_path


# ---- sop check ------------------------------------------------------------------------------------------------


def test_check_of_a_100000_squared_loop_ends_with_the_budget_problem_at_its_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "您好 {{ contact.name }}\n\n" + NESTED)
    [problem] = check_folder(folder)
    assert (Path(problem.path).name, problem.line, problem.col, problem.code) == ("bomb.j2", 3, 1, "SOP029")
    assert f"模板执行步数超过上限 {STEPS_MAX}" in problem.message
    assert f"render budget: more than {STEPS_MAX} loop iterations" in problem.message


def test_cli_check_of_the_loop_bomb_finishes_and_prints_file_line_col(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "您好\n" + NESTED)
    result = CliRunner().invoke(cli, ["sop", "check", str(folder)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"{folder / 'bomb.j2'}:2:1 SOP029 模板执行步数超过上限")
    assert result.output.splitlines()[-1] == "发现 1 个问题"


def test_check_reports_an_inline_text_bomb_at_its_yaml_line(tmp_path: Path) -> None:
    inline = TEMPLATE.replace("      file: bomb.j2\n", '      text: |\n        您好\n        {{ "x" * 10000000 }}\n')
    (tmp_path / "t.yaml").write_text(inline, encoding="utf-8")
    [problem] = check_folder(tmp_path)
    assert (problem.line, problem.col, problem.code) == (11, 9, "SOP029")
    assert "模板生成的中间文本超过" in problem.message


def test_a_loop_producing_too_much_output_is_an_output_problem_not_a_long_text(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "您好\n{% for i in range(2000) %}0123456789{% endfor %}")
    [problem] = check_folder(folder)
    assert (problem.line, problem.code) == (2, "SOP029")
    assert f"模板输出超过 {OUTPUT_MAX_CHARS} 个字符" in problem.message


def test_checking_a_huge_constant_does_not_compute_it() -> None:
    # Jinja2 folds constant expressions while compiling; the budgeted operators are never folded
    assert analyse_positioned('{{ "x" * 10 ** 12 }}{{ 7 ** 10 ** 9 }}') == []


# ---- rendering -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bomb", "expected"),
    [
        (NESTED, "模板执行步数超过上限"),
        ("{% for i in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}", ""),
        # 2⁴¹ macro calls: stopped at the 10001st call, or at the deadline on a machine too busy to make 10000 calls
        ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}", "步数|秒"),
        ('{{ "x" * 10000000 }}', "中间文本"),
        ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "中间文本"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}"
            "{% endfor %}",
            "中间文本",
        ),
        ("{{ 'x' | center(1000000000) }}", "中间文本"),
        ("{{ 'x'.ljust(1000000000) }}", "中间文本"),
        ("{{ '{:>1000000000}'.format(1) }}", "中间文本"),
        ("{{ '{:{}}'.format(1, 1000000000) }}{{ '{:{w}}'.format_map({'w': 1000000000}) }}", "中间文本"),
        ("{{ '%1000000000d' % 1 }}", "中间文本"),
        ("{{ '%*d' % (1000000000, 1) }}", "中间文本"),
        ("{{ '%*d' | format(1000000000, 1) }}", "中间文本"),
        ("{{ ('x' * 5000) | join('y' * 1000) }}", "中间文本"),
        ("{% set s = 'x' * 100000 %}{{ s | list | sort | first }}", "步数"),
        ("{% set s = 'ab http://x.cn ' * 8000 %}{{ s | urlize | length }}", "步数"),
        ("{{ ('z' * 100) | replace('', 'y' * 100000) }}", "中间文本"),
        ("{{ ('z' * 1000).replace('', 'y' * 10000) }}", "中间文本"),
        ("{{ 3 ** 100000 }}", "数字过大"),
        ("{% for i in range(10000) if false %}{% endfor %}{% for i in range(10) %}{% endfor %}", "步数"),
    ],
)
def test_a_bomb_is_refused_with_its_file(bomb: str, expected: str) -> None:
    error = _render_error({"bomb.j2": bomb})
    if not expected:  # Python's recursion limit stops an unbounded recursive loop first: still a precise refusal
        assert (error.code, error.file) == ("render_error", "bomb.j2")
        return
    assert (error.code, error.file, error.line) == ("over_budget", "bomb.j2", 1)
    assert any(word in error.message_cn for word in expected.split("|")) and "render budget:" in error.message_cn


def test_the_output_bomb_names_the_line_that_crossed_the_limit() -> None:
    error = _render_error({"bomb.j2": "第一行\n第二行\n{% for i in range(20) %}{{ 'x' * 1000 }}{% endfor %}"})
    assert (error.code, error.file, error.line) == ("over_budget", "bomb.j2", 3)


def test_an_included_bomb_is_refused_at_the_include() -> None:
    error = _render_error({"bomb.j2": "您好\n{% include '_part.j2' %}", "_part.j2": "a\n" + NESTED})
    assert (error.code, error.file, error.line) == ("over_budget", "_part.j2", 2)


def test_a_when_expression_is_bounded_too() -> None:
    renderer = SopRenderer(_bundle({"bomb.j2": "您好"}))
    with pytest.raises(SopRenderError) as caught:
        renderer.evaluate("range(100000) | sum > 0", SAMPLE_CONTEXT)
    assert caught.value.code == "over_budget"
    assert renderer.evaluate("range(100) | sum > 0", SAMPLE_CONTEXT) is True


def test_normal_templates_render_exactly_as_before() -> None:
    text = (
        "{% for tag in ['a', 'b', 'c'] %}{{ loop.index }}{{ tag }}{% if not loop.last %},{% endif %}{% endfor %} "
        "{{ 'a' ~ 'b' }} {{ 2 * 3 }} {{ 2 ** 10 }} {{ [1] + [2] }} {{ 'ab' | upper | center(6) }} {{ '%03d' % 7 }} "
        "{{ '{:>3}'.format(1) }} {{ 'x' * 3 }} {{ ['a', 'b'] | join('-') }} "
        "{% set s %}{{ contact.name }}{% endset %}{{ s }} {{ '%d' % 12345678901 }} {{ none | default(2000000, true) }} "
        "{{ 'abc'.count('b', 0, 10000000) }}"
    )
    rendered = SopRenderer(_bundle({"bomb.j2": text})).render(Message(file="bomb.j2"), SAMPLE_CONTEXT)
    name = SAMPLE_CONTEXT["contact"]["name"]
    assert rendered.text == f"1a,2b,3c ab 6 1024 [1, 2]   AB   007   1 xxx a-b {name} 12345678901 2000000 1"


def test_a_render_past_its_deadline_stops_at_the_next_step() -> None:
    moments = iter(range(100))
    budget = RenderBudget(seconds=5, clock=lambda: float(next(moments)))  # every look at the clock: one second on
    template = BudgetedSandbox().from_string("{% for i in [1, 2, 3, 4, 5, 6, 7, 8] %}{{ i }}{% endfor %}")
    with pytest.raises(RenderBudgetExceeded) as caught:
        render_streamed(template, {}, budget)
    assert caught.value.kind == "time" and "模板渲染超过 5 秒" in caught.value.text()


def test_each_render_has_its_own_budget() -> None:
    renderer = SopRenderer(_bundle({"bomb.j2": "{% for i in range(3000) %}{% endfor %}好"}))
    for _ in range(5):  # 5 × 6000 steps: over one budget, within each
        assert renderer.render(Message(file="bomb.j2"), SAMPLE_CONTEXT).text == "好"


# ---- campaigns ------------------------------------------------------------------------------------------------


def test_campaign_content_over_budget_is_refused() -> None:
    content = CampaignContent(text="您好\n" + NESTED)
    found = check_content(content)
    assert found is not None and found.code == "over_budget" and "模板执行步数超过上限" in found.message_cn
    good = ContentRenderer(CampaignContent(text="{% for i in range(3) %}{{ i }}{% endfor %}"))
    context: dict[str, Any] = {**SAMPLE_CONTEXT, "campaign": {"code": "c", "name": "n"}}
    assert good.render(context).text == "012"


# ---- a live welcome -------------------------------------------------------------------------------------------


@pytest.fixture
async def seeded(session_factory: SessionFactory) -> SessionFactory:
    async with transaction(session_factory) as s:
        s.add(Corp(corp_id=CORP, name="测试品牌"))
        await s.flush()
        dealer = Dealer(corp_id=CORP, code="BJ001", name="北京望京4S店", city="北京")
        s.add(dealer)
        await s.flush()
        s.add(Staff(corp_id=CORP, userid="zhangsan", name="张三", dealer_id=dealer.id))
    return session_factory


async def test_a_welcome_over_budget_is_refused_and_audited_never_sent(seeded: SessionFactory, tmp_path: Path) -> None:
    (tmp_path / "welcome.yaml").write_text(WELCOME_ONLY_SOP, encoding="utf-8")
    (tmp_path / "welcome").mkdir()
    (tmp_path / "welcome" / "default.j2").write_text("您好\n{% for i in range(99) %}{{ 'x' * 1000 }}{% endfor %}")
    async with transaction(seeded) as s:
        await contacts.on_contact_added(
            s,
            CORP,
            userid="zhangsan",
            external_userid="wmAAAAcustomer0001",
            state="",
            welcome_code="WC1",
            event_time=T0,
            hooks=sop_process_services(tmp_path),
        )
    assert await commands(seeded, CommandKind.SEND_WELCOME) == []
    [entry] = await rows(seeded, AuditLog)
    assert entry.action == "welcome.template_broken" and entry.detail is not None
    assert entry.detail["error"].startswith("welcome/default.j2:2: over_budget 模板输出超过")
