"""Welcome rendering: the shipped templates per channel, fallback on broken templates, the sandbox."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scrm.channel import parse_state
from scrm.welcome import TEXT_MAX_BYTES, WelcomeRenderer, WelcomeTemplateError, build_context

SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"
MORNING = datetime(2024, 5, 1, 1, 30, tzinfo=UTC)  # 09:30 in Beijing
EVENING = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # 20:00 in Beijing


def _context(state: str = "", now: datetime = MORNING, contact_name: str = "") -> dict[str, object]:
    return build_context(
        contact={"external_userid": "wmABC", "name": contact_name},
        staff={"userid": "zhangsan", "name": "张三"},
        dealer={"code": "BJ001", "name": "北京望京4S店", "city": "北京"},
        channel=parse_state(state),
        now=now,
    )


@pytest.fixture
def sop_copy(tmp_path: Path) -> Path:
    shutil.copytree(SHIPPED / "welcome", tmp_path / "welcome")
    return tmp_path


def test_shipped_templates_all_render() -> None:
    assert WelcomeRenderer(SHIPPED).check() == []


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
    message = WelcomeRenderer(SHIPPED).render(channel, _context())
    assert message.template == template
    assert phrase in message.text
    assert "张三" in message.text and "北京望京4S店" in message.text and "试驾" in message.text
    assert message.text.startswith("早上好！")
    assert len(message.text.encode()) <= TEXT_MAX_BYTES


def test_greeting_follows_beijing_time_and_name() -> None:
    message = WelcomeRenderer(SHIPPED).render("qr", _context(now=EVENING, contact_name="王先生"))
    assert message.text.startswith("晚上好，王先生！")


def test_unknown_contact_and_staff_still_render() -> None:
    context = build_context(contact={"external_userid": "wmX"}, now=MORNING)
    message = WelcomeRenderer(SHIPPED).render("qr", context)
    assert "销售顾问" in message.text and "None" not in message.text


def test_broken_channel_template_falls_back_to_default(sop_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    (sop_copy / "welcome" / "ad.j2").write_text("您好\n{{ staff.nickname }}\n", encoding="utf-8")
    renderer = WelcomeRenderer(sop_copy)
    message = renderer.render("ad", _context())
    assert message.template == "default.j2"
    assert "ad.j2:2" in caplog.text and "nickname" in caplog.text
    with pytest.raises(WelcomeTemplateError) as info:
        renderer.render_template("ad.j2", _context())
    assert info.value.line == 2
    assert info.value.path.name == "ad.j2"


def test_syntax_error_names_file_and_line(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "event.j2").write_text("第一行\n第二行\n{% if %}\n", encoding="utf-8")
    problems = WelcomeRenderer(sop_copy).check()
    assert [(p.path.name, p.line) for p in problems] == [("event.j2", 3)]
    assert str(problems[0]).endswith("event.j2:3: Expected an expression, got 'end of statement block'")


def test_sandbox_refuses_class_walk(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "qr.j2").write_text("hi {{ ''.__class__.__mro__ }}", encoding="utf-8")
    renderer = WelcomeRenderer(sop_copy)
    with pytest.raises(WelcomeTemplateError, match="SecurityError: access to attribute '__class__'"):
        renderer.render_template("qr.j2", _context())
    assert renderer.render("qr", _context()).template == "default.j2"


def test_text_over_limit_is_a_template_error(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "referral.j2").write_text("{{ '试驾' * 700 }}", encoding="utf-8")
    renderer = WelcomeRenderer(sop_copy)
    with pytest.raises(WelcomeTemplateError, match="4200 bytes, over the 4000-byte limit"):
        renderer.render_template("referral.j2", _context())
    assert renderer.render("referral", _context()).template == "default.j2"


def test_broken_default_raises(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "default.j2").write_text("{{ dealer.phone }}", encoding="utf-8")
    with pytest.raises(WelcomeTemplateError, match=r"default\.j2:1: UndefinedError"):
        WelcomeRenderer(sop_copy).render("livestream", _context())


def test_error_inside_included_partial_names_the_partial(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "_greeting.j2").write_text("好\n{{ contact.nickname }}", encoding="utf-8")
    with pytest.raises(WelcomeTemplateError) as info:
        WelcomeRenderer(sop_copy).render_template("qr.j2", _context())
    assert (info.value.path.name, info.value.line) == ("_greeting.j2", 2)


def test_attachments_are_collected(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "event.j2").write_text(
        "欢迎参加试驾会{{ attach_link('预约试驾', 'https://example.com/td', desc='一键预约') }}"
        "{{ attach_image('https://example.com/p.png') }}",
        encoding="utf-8",
    )
    message = WelcomeRenderer(sop_copy).render("event", _context())
    assert message.text == "欢迎参加试驾会"
    assert message.attachments == [
        {"msgtype": "link", "link": {"title": "预约试驾", "url": "https://example.com/td", "desc": "一键预约"}},
        {"msgtype": "image", "image": {"pic_url": "https://example.com/p.png"}},
    ]


def test_more_than_nine_attachments_is_an_error(sop_copy: Path) -> None:
    (sop_copy / "welcome" / "ad.j2").write_text(
        "{% for i in range(10) %}{{ attach_image('https://example.com/' ~ i) }}{% endfor %}hi", encoding="utf-8"
    )
    with pytest.raises(WelcomeTemplateError, match="more than 9 attachments"):
        WelcomeRenderer(sop_copy).render_template("ad.j2", _context())


def test_templates_are_compiled_once(sop_copy: Path) -> None:
    renderer = WelcomeRenderer(sop_copy)
    first = renderer.render("qr", _context())
    (sop_copy / "welcome" / "qr.j2").write_text("changed on disk", encoding="utf-8")
    assert renderer.render("qr", _context()) == first
    assert WelcomeRenderer(sop_copy).render("qr", _context()).text == "changed on disk"
