"""The welcome, rendered the one way it is sent: the ``welcome`` step of a contact.added SOP template
(``welcome: {by_channel: welcome}``). The shipped templates per channel, fallback on broken templates, the
sandbox, attachments, and compiled templates shared per bundle version."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scrm.channel import parse_state
from scrm.sop.render import TEXT_MAX_BYTES, SopRenderer, SopRenderError
from scrm.sop.source import load_folder
from scrm.sop.spec import Message, TemplateBundle
from scrm.templating.compiled import CompiledBundles
from scrm.templating.context import build_context
from tests.domain_support import WELCOME_ONLY_SOP

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"
MORNING = datetime(2024, 5, 1, 1, 30, tzinfo=UTC)  # 09:30 in Beijing
EVENING = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # 20:00 in Beijing


def _context(state: str = "", now: datetime = MORNING, contact_name: str = "") -> dict[str, Any]:
    channel = parse_state(state).channel
    return build_context(
        contact={"external_userid": "wmABC", "name": contact_name, "channel": channel},
        staff={"userid": "zhangsan", "name": "张三"},
        dealer={"code": "BJ001", "name": "北京望京4S店", "city": "北京"},
        now=now,
    )


def _welcome_bundle(folder: Path) -> tuple[TemplateBundle, Message]:
    """The folder's contact.added template with a welcome step, and that step's message."""
    for bundle in load_folder(folder).bundles.values():
        for step in bundle.template.steps:
            if step.welcome is not None and bundle.template.trigger.event == "contact.added":
                return bundle, step.welcome
    raise AssertionError(f"no welcome step in {folder}")


def _render(folder: Path, channel: str, context: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """Text, attachments and the file (relative to welcome/) the welcome of ``channel`` was rendered from."""
    bundle, message = _welcome_bundle(folder)
    rendered = SopRenderer(bundle).render(message, context, channel=channel)
    return rendered.text, rendered.attachments, Path(rendered.file or "").name


def _render_file(folder: Path, name: str, context: dict[str, Any]) -> str:
    """Render one welcome file on its own (no fallback), as the checker does."""
    bundle, _ = _welcome_bundle(folder)
    return SopRenderer(bundle).render(Message(file=f"welcome/{name}"), context).text


@pytest.fixture
def sop_copy(tmp_path: Path) -> Path:
    shutil.copytree(SHIPPED / "welcome", tmp_path / "welcome")
    (tmp_path / "welcome.yaml").write_text(WELCOME_ONLY_SOP, encoding="utf-8")
    return tmp_path


def test_shipped_templates_all_render() -> None:
    bundle, _ = _welcome_bundle(SHIPPED)
    assert SopRenderer(bundle).problems(_context()) == []


@pytest.mark.parametrize(
    ("channel", "template", "phrase"),
    [
        ("qr", "qr.j2", "扫码添加"),
        ("ad", "ad.j2", "购车礼遇"),
        ("referral", "referral.j2", "车主朋友推荐"),
        ("event", "event.j2", "参加我们的活动"),
        ("", "default.j2", "很高兴认识您"),
        ("livestream", "default.j2", "很高兴认识您"),
        ("_greeting", "default.j2", "很高兴认识您"),
        ("../welcome/qr", "default.j2", "很高兴认识您"),
    ],
)
def test_each_channel_gets_its_template(channel: str, template: str, phrase: str) -> None:
    text, _, file = _render(SHIPPED, channel, _context())
    assert file == template
    assert phrase in text
    assert "张三" in text and "北京望京4S店" in text and "试驾" in text
    assert text.startswith("早上好！")
    assert len(text.encode()) <= TEXT_MAX_BYTES


def test_greeting_follows_beijing_time_and_name() -> None:
    text, _, _ = _render(SHIPPED, "qr", _context(now=EVENING, contact_name="王先生"))
    assert text.startswith("晚上好，王先生！")


def test_unknown_contact_and_staff_still_render() -> None:
    context = build_context(contact={"external_userid": "wmX"}, now=MORNING)
    text, _, _ = _render(SHIPPED, "qr", context)
    assert "销售顾问" in text and "None" not in text


def test_broken_channel_template_falls_back_to_default(sop_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    (sop_copy / "welcome" / "ad.j2").write_text("您好\n{{ staff.nickname }}\n", encoding="utf-8")
    _, _, file = _render(sop_copy, "ad", _context())
    assert file == "default.j2"
    assert "ad.j2:2" in caplog.text and "nickname" in caplog.text
    with pytest.raises(SopRenderError) as info:
        _render_file(sop_copy, "ad.j2", _context())
    assert info.value.line == 2
    assert Path(info.value.file or "").name == "ad.j2"


def test_syntax_error_names_file_and_line(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "event.j2").write_text("第一行\n第二行\n{% if %}\n", encoding="utf-8")
    bundle, _ = _welcome_bundle(sop_copy)
    problems = SopRenderer(bundle).problems(_context())
    assert [(Path(p.file or "").name, p.line) for p in problems] == [("event.j2", 3)]
    assert problems[0].code == "jinja_syntax"


def test_sandbox_refuses_class_walk(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "qr.j2").write_text("hi {{ ''.__class__.__mro__ }}", encoding="utf-8")
    with pytest.raises(SopRenderError, match="unsafe_template") as info:
        _render_file(sop_copy, "qr.j2", _context())
    assert "__class__" in info.value.message_cn
    assert _render(sop_copy, "qr", _context())[2] == "default.j2"


def test_text_over_limit_is_a_template_error(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "referral.j2").write_text("{{ '试驾' * 700 }}", encoding="utf-8")
    with pytest.raises(SopRenderError, match="正文 4200 字节，超过 4000 字节上限"):
        _render_file(sop_copy, "referral.j2", _context())
    assert _render(sop_copy, "referral", _context())[2] == "default.j2"


def test_broken_default_raises(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "default.j2").write_text("{{ dealer.fax }}", encoding="utf-8")  # no such dealer field
    with pytest.raises(SopRenderError, match=r"welcome/default\.j2:1: undefined_variable"):
        _render(sop_copy, "livestream", _context())


def test_error_inside_included_partial_names_the_partial(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "_greeting.j2").write_text("好\n{{ contact.nickname }}", encoding="utf-8")
    with pytest.raises(SopRenderError) as info:
        _render_file(sop_copy, "qr.j2", _context())
    assert (Path(info.value.file or "").name, info.value.line) == ("_greeting.j2", 2)


def test_attachments_are_collected(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "event.j2").write_text(
        "欢迎参加试驾会{{ attach_link('预约试驾', 'https://example.com/td', desc='一键预约') }}"
        "{{ attach_image('https://example.com/p.png') }}",
        encoding="utf-8",
    )
    text, attachments, _ = _render(sop_copy, "event", _context())
    assert text == "欢迎参加试驾会"
    assert attachments == [
        {"msgtype": "link", "link": {"title": "预约试驾", "url": "https://example.com/td", "desc": "一键预约"}},
        {"msgtype": "image", "image": {"pic_url": "https://example.com/p.png"}},
    ]


def test_more_than_nine_attachments_is_an_error(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "ad.j2").write_text(
        "{% for i in range(10) %}{{ attach_image('https://example.com/' ~ i) }}{% endfor %}hi", encoding="utf-8"
    )
    with pytest.raises(SopRenderError, match="附件最多 9 个"):
        _render_file(sop_copy, "ad.j2", _context())


def test_templates_are_compiled_once(sop_copy: Path) -> None:
    """A bundle version is compiled once per process; an edit on disk is a new version, loaded anew."""
    compiled = CompiledBundles()
    bundle, message = _welcome_bundle(sop_copy)
    first = SopRenderer(bundle, compiled=compiled).render(message, _context(), channel="qr")
    (sop_copy / "welcome" / "qr.j2").write_text("changed on disk", encoding="utf-8")
    assert SopRenderer(bundle, compiled=compiled).render(message, _context(), channel="qr") == first
    assert compiled.get(bundle) is compiled.get(bundle) and len(compiled) == 1
    edited, _ = _welcome_bundle(sop_copy)
    assert edited.version != bundle.version
    assert SopRenderer(edited, compiled=compiled).render(message, _context(), channel="qr").text == "changed on disk"
