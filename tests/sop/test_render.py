"""Rendering SOP messages: sources, by_channel, attachments, tracked links, filters and every error code."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from scrm.links import LinkSigner
from scrm.sop.render import TEXT_MAX_BYTES, SopRenderer, SopRenderError
from scrm.sop.spec import Message, SopTemplate, TemplateBundle
from scrm.templating.context import CHINA_TZ, SAMPLE_CONTEXT, VARIABLES, build_context

NOW = datetime(2026, 5, 8, 2, 30, tzinfo=UTC)  # Friday 10:30 in China


def make_bundle(
    steps: list[dict[str, Any]],
    files: dict[str, str] | None = None,
    *,
    kind: str = "contact",
    template_id: str = "render_case",
) -> TemplateBundle:
    raw: dict[str, Any] = {
        "id": template_id,
        "name": "渲染测试",
        "kind": kind,
        "trigger": {"event": "message.keyword", "keywords": ["x"]},
        "steps": steps,
    }
    return TemplateBundle(SopTemplate.model_validate(raw), raw, files or {}, f"{template_id}.yaml")


def message(**fields: Any) -> Message:
    return Message.model_validate(fields)


def context(**overrides: Any) -> dict[str, Any]:
    parts: dict[str, Any] = {
        "contact": {"external_userid": "wmABC", "name": "李雷", "channel": "qr", "stage": "intent"},
        "staff": {"userid": "zhangsan", "name": "张三"},
        "dealer": {"code": "BJ001", "name": "北京望京店", "address": "望京北路 18 号"},
    }
    parts.update(overrides)
    return build_context(**parts, now=NOW, corp_id="wwcorp")


def render_text(text: str, ctx: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> str:
    bundle = make_bundle([{"private_message": {"text": "x"}}], files)
    return SopRenderer(bundle).render(message(text=text), ctx or context()).text


def render_error(
    msg: Message, files: dict[str, str] | None = None, ctx: dict[str, Any] | None = None
) -> SopRenderError:
    bundle = make_bundle([{"private_message": {"text": "x"}}], files)
    with pytest.raises(SopRenderError) as caught:
        SopRenderer(bundle).render(msg, ctx or context())
    return caught.value


# ---- sources ----------------------------------------------------------------------------------------------


def test_inline_text_uses_variables_and_is_stripped() -> None:
    text = render_text(
        "\n  {{ contact.name }}您好，我是{{ dealer.name }}的{{ staff.name }}（{{ contact.stage_cn }}）\n\n"
    )
    assert text == "李雷您好，我是北京望京店的张三（意向）"


def test_file_message_and_includes_resolve_next_to_the_file_then_from_the_root() -> None:
    files = {
        "nurture/day1.j2": '{% include "_sign.j2" %}|{% include "shared/_footer.j2" %}',
        "nurture/_sign.j2": "顾问{{ staff.name }}",
        "shared/_footer.j2": "{{ dealer.name }}",
    }
    bundle = make_bundle([{"private_message": {"file": "nurture/day1.j2"}}], files)
    rendered = SopRenderer(bundle).render(message(file="nurture/day1.j2"), context())
    assert (rendered.text, rendered.file) == ("顾问张三|北京望京店", "nurture/day1.j2")


def test_inline_text_can_include_a_message_file() -> None:
    assert (
        render_text('{% include "parts/_hi.j2" %}！', files={"parts/_hi.j2": "你好{{ contact.name }}"}) == "你好李雷！"
    )


BY_CHANNEL_FILES = {
    "hello/default.j2": "默认：{{ contact.name }}",
    "hello/ad.j2": "广告：{{ contact.name }}",
    "hello/_partial.j2": "片段",
    "hello/broken.j2": "{{ contact.nme }}",
}


@pytest.mark.parametrize(
    ("channel", "contact_channel", "expected", "file"),
    [
        ("ad", "", "广告：李雷", "hello/ad.j2"),
        ("referral", "", "默认：李雷", "hello/default.j2"),  # no referral.j2 → default
        ("", "ad", "广告：李雷", "hello/ad.j2"),  # no channel given → the contact's channel
        ("_partial", "", "默认：李雷", "hello/default.j2"),  # partials are never chosen by channel
        ("../hello/ad", "", "默认：李雷", "hello/default.j2"),
    ],
)
def test_by_channel_picks_the_channel_file_else_default(
    channel: str, contact_channel: str, expected: str, file: str
) -> None:
    bundle = make_bundle([{"private_message": {"by_channel": "hello"}}], BY_CHANNEL_FILES)
    ctx = context(contact={"name": "李雷", "channel": contact_channel})
    rendered = SopRenderer(bundle).render(message(by_channel="hello"), ctx, channel=channel)
    assert (rendered.text, rendered.file) == (expected, file)


def test_a_broken_channel_file_falls_back_to_default(caplog: pytest.LogCaptureFixture) -> None:
    bundle = make_bundle([{"private_message": {"by_channel": "hello"}}], BY_CHANNEL_FILES)
    with caplog.at_level(logging.ERROR, logger="scrm.sop.render"):
        rendered = SopRenderer(bundle).render(message(by_channel="hello"), context(), channel="broken")
    assert rendered.text == "默认：李雷"
    assert "hello/broken.j2:1" in caplog.text


def test_a_missing_default_file_is_an_error() -> None:
    error = render_error(message(by_channel="nowhere"), {"nowhere_else/default.j2": "x"})
    assert (error.code, error.file, error.loc) == ("missing_file", "nowhere/default.j2", ("by_channel",))


def test_advisor_task_title_is_rendered() -> None:
    bundle = make_bundle([{"advisor_task": {"title": "跟进：{{ contact.name }}", "text": "您好"}}])
    step = bundle.template.steps[0]
    assert step.advisor_task is not None
    rendered = SopRenderer(bundle).render(step.advisor_task, context())
    assert (rendered.title, rendered.text) == ("跟进：李雷", "您好")


def test_an_edited_bundle_renders_its_new_files() -> None:
    steps = [{"private_message": {"file": "a.j2"}}]
    first = SopRenderer(make_bundle(steps, {"a.j2": "第一版"})).render(message(file="a.j2"), context())
    second = SopRenderer(make_bundle(steps, {"a.j2": "第二版"})).render(message(file="a.j2"), context())
    assert (first.text, second.text) == ("第一版", "第二版")


# ---- attachments and tracked links ------------------------------------------------------------------------


def test_yaml_attachments_then_attach_calls_in_wecom_shape() -> None:
    msg = message(
        text='看看这个{{ attach_link("车型手册", "https://m.example.com/b", desc="配置") }}'
        '{{ attach_image("https://m.example.com/p.png") }}'
        '{{ attach_miniprogram("小程序", "wxapp", "pages/x", "MEDIA") }}',
        attachments=[
            {"link": {"title": "{{ dealer.name }}试驾", "url": "https://m.example.com/t?d={{ dealer.code }}"}},
            {"image": {"media_id": "MEDIA_IMG"}},
            {"miniprogram": {"title": "预约", "appid": "wxapp", "page": "pages/book", "pic_media_id": "M2"}},
        ],
    )
    bundle = make_bundle([{"private_message": {"text": "x"}}])
    rendered = SopRenderer(bundle).render(msg, context())
    assert rendered.text == "看看这个"
    assert rendered.attachments == [
        {"msgtype": "link", "link": {"title": "北京望京店试驾", "url": "https://m.example.com/t?d=BJ001"}},
        {"msgtype": "image", "image": {"media_id": "MEDIA_IMG"}},
        {
            "msgtype": "miniprogram",
            "miniprogram": {"title": "预约", "appid": "wxapp", "page": "pages/book", "pic_media_id": "M2"},
        },
        {"msgtype": "link", "link": {"title": "车型手册", "url": "https://m.example.com/b", "desc": "配置"}},
        {"msgtype": "image", "image": {"pic_url": "https://m.example.com/p.png"}},
        {
            "msgtype": "miniprogram",
            "miniprogram": {"title": "小程序", "appid": "wxapp", "page": "pages/x", "pic_media_id": "MEDIA"},
        },
    ]


def test_an_attachment_alone_is_a_message() -> None:
    bundle = make_bundle([{"private_message": {"text": "x"}}])
    msg = message(attachments=[{"image": {"pic_url": "https://m.example.com/p.png"}}])
    rendered = SopRenderer(bundle).render(msg, context())
    assert (rendered.text, len(rendered.attachments)) == ("", 1)


def test_link_urls_become_tracked_links_for_the_contact() -> None:
    signer = LinkSigner(b"secret", "https://lianyi.example.com")
    bundle = make_bundle([{"private_message": {"text": "x"}}], template_id="nurture_case")
    msg = message(
        text='{{ attach_link("手册", "https://m.example.com/brochure") }}试驾',
        attachments=[
            {"link": {"title": "试驾", "url": "https://m.example.com/book"}},
            {"image": {"pic_url": "https://i/x.png"}},
        ],
    )
    rendered = SopRenderer(bundle, links=signer).render(msg, context())
    urls = [a["link"]["url"] for a in rendered.attachments if a["msgtype"] == "link"]
    assert all(u.startswith("https://lianyi.example.com/l/") for u in urls)
    unwrapped = [signer.unwrap(urlsplit(u).path.removeprefix("/l/")) for u in urls]
    assert [(t.url, t.corp_id, t.external_userid, t.source) for t in unwrapped] == [
        ("https://m.example.com/book", "wwcorp", "wmABC", "sop:nurture_case"),
        ("https://m.example.com/brochure", "wwcorp", "wmABC", "sop:nurture_case"),
    ]
    assert rendered.attachments[1] == {"msgtype": "image", "image": {"pic_url": "https://i/x.png"}}


def test_links_without_a_contact_stay_as_written() -> None:
    signer = LinkSigner(b"secret", "https://lianyi.example.com")
    bundle = make_bundle([{"group_message": {"text": "x"}}], kind="group")
    msg = message(text="活动", attachments=[{"link": {"title": "报名", "url": "https://m.example.com/e"}}])
    ctx = build_context(group={"chat_id": "wr1", "name": "车友群"}, now=NOW)
    rendered = SopRenderer(bundle, links=signer).render(msg, ctx)
    assert rendered.attachments[0]["link"]["url"] == "https://m.example.com/e"


def test_more_than_nine_attachments_in_all_is_an_error() -> None:
    links = [{"link": {"title": f"链接{i}", "url": f"https://m.example.com/{i}"}} for i in range(8)]
    msg = message(
        text='{{ attach_image("https://a/1.png") }}{{ attach_image("https://a/2.png") }}正文', attachments=links
    )
    error = render_error(msg)
    assert (error.code, error.loc) == ("too_many_attachments", ("attachments",))


# ---- filters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ now | date }}", "2026年5月8日"),
        ('{{ now | date("%Y-%m-%d %H:%M") }}', "2026-05-08 10:30"),
        ('{{ now | date("%-m/%-d %-H点") }}', "5/8 10点"),
        ("{{ now | cn_date }}", "5月8日"),
        ("{{ now | cn_date(with_year=true) }}", "2026年5月8日"),
        ("{{ now | weekday_cn }}", "周五"),
        ('{{ "2026-05-10" | weekday_cn("星期") }}', "星期日"),
        ('{{ "13812345678" | mask_phone }}', "138****5678"),
        ('{{ "12345" | mask_phone }}', "***45"),
        ('{{ "王小明" | mask_name }}', "王**"),
        ('{{ "王" | mask_name }}', "王*"),
        ("{{ contact.added_at | days_since }}", "7"),
        ('{{ "2026-05-20" | days_until }}', "12"),
        ('{{ "2026-05-07T23:30:00+00:00" | cn_date }}', "5月8日"),  # UTC late evening is the next day in China
        ('[{{ "" | date }}{{ "" | cn_date }}{{ "" | weekday_cn }}{{ "" | mask_phone }}{{ "" | mask_name }}]', "[]"),
        ('[{{ "" | days_since }}{{ "" | days_until }}]', "[]"),
    ],
)
def test_filters(source: str, expected: str) -> None:
    ctx = context(contact={"name": "李雷", "added_at": datetime(2026, 4, 30, 20, 0, tzinfo=UTC)})  # 5月1日 in China
    assert render_text(source, ctx) == expected


def test_a_filter_given_junk_reports_a_render_error() -> None:
    error = render_error(message(text='{{ "next tuesday" | cn_date }}'))
    assert error.code == "render_error"
    assert "不是日期" in error.message_cn


# ---- context ----------------------------------------------------------------------------------------------


def test_build_context_fills_every_documented_key() -> None:
    ctx = build_context(now=NOW)
    assert set(ctx) == VARIABLES
    assert ctx["contact"]["tags"] == [] and ctx["dealer"]["answers"] == {} and ctx["group"]["member_count"] == 0
    assert ctx["now"] == NOW and ctx["now"].tzinfo == CHINA_TZ and ctx["now"].hour == 10
    assert build_context(now=NOW)["contact"]["tags"] is not ctx["contact"]["tags"]


def test_build_context_reads_objects_and_turns_none_into_empty_values() -> None:
    class Row:
        name = "韩梅梅"
        stage = "owner"
        intent_level = None

    ctx = build_context(contact=Row(), dealer={"answers": None, "name": None}, now=NOW)
    assert (ctx["contact"]["name"], ctx["contact"]["stage_cn"], ctx["contact"]["intent_level"]) == (
        "韩梅梅",
        "车主",
        "",
    )
    assert (ctx["dealer"]["answers"], ctx["dealer"]["name"]) == ({}, "")


def test_build_context_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_context(now=datetime(2026, 5, 8, 10, 0))


def test_sample_context_is_realistic_and_complete() -> None:
    assert set(SAMPLE_CONTEXT) == VARIABLES
    assert SAMPLE_CONTEXT["contact"]["name"] and SAMPLE_CONTEXT["dealer"]["answers"]["price"]
    assert SAMPLE_CONTEXT["now"].date() == date(2026, 5, 8)


# ---- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "name"),
    [
        ("您好\n{{ contact.nmae }}", 2, "nmae"),
        ("{{ customer.name }}", 1, "customer"),
        ("第一行\n第二行\n{% if dealer.answers.price %}有{% endif %}", 3, "price"),
    ],
)
def test_undefined_variables_are_errors_at_their_line(source: str, line: int, name: str) -> None:
    error = render_error(message(text=source))
    assert (error.code, error.file, error.line, error.loc) == ("undefined_variable", None, line, ("text",))
    assert name in error.message_cn


def test_undefined_in_a_file_names_the_file_and_line_even_through_an_include() -> None:
    files = {"n/main.j2": 'a\nb\n{% include "_part.j2" %}', "n/_part.j2": "x\n\n{{ staff.nickname }}"}
    error = render_error(message(file="n/main.j2"), files)
    assert (error.code, error.file, error.line, error.loc) == ("undefined_variable", "n/_part.j2", 3, ("file",))
    assert str(error).startswith("n/_part.j2:3: undefined_variable")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{{ contact.tags.append('VIP') }}",  # the context is immutable too
        "{{ ().__class__.__base__.__subclasses__() }}",
    ],
)
def test_injection_is_refused_at_render_time(source: str) -> None:
    ctx = context()
    error = render_error(message(text=f"您好\n{source}"), ctx=ctx)
    assert (error.code, error.line) == ("unsafe_template", 2)
    assert ctx["contact"]["tags"] == []


@pytest.mark.parametrize(
    ("source", "line"),
    [("{% if contact.name %}没有结束", 1), ("一\n二\n{{ contact.name }", 3), ("{% for x in %}{% endfor %}", 1)],
)
def test_syntax_errors_carry_the_line(source: str, line: int) -> None:
    error = render_error(message(text=source))
    assert (error.code, error.file, error.line) == ("jinja_syntax", None, line)


def test_a_syntax_error_in_a_file() -> None:
    error = render_error(message(file="a.j2"), {"a.j2": "好\n{% endif %}"})
    assert (error.code, error.file, error.line) == ("jinja_syntax", "a.j2", 2)


def test_missing_files_and_includes() -> None:
    assert render_error(message(file="nope.j2")).code == "missing_file"
    error = render_error(message(file="a.j2"), {"a.j2": '{% include "ghost.j2" %}'})
    assert (error.code, error.file) == ("missing_file", "a.j2")


def test_text_limit_is_4000_utf8_bytes() -> None:
    exactly = "好" * 1333 + "a"  # 3999 + 1 bytes
    assert len(render_text(exactly).encode("utf-8")) == TEXT_MAX_BYTES
    error = render_error(message(text=exactly + "a"))
    assert (error.code, error.loc) == ("text_too_long", ("text",))
    assert "4001" in error.message_cn


def test_a_message_rendering_to_nothing_is_an_error() -> None:
    error = render_error(message(text="{% if contact.name == '不存在' %}你好{% endif %}\n  "))
    assert error.code == "empty_message"


# ---- when expressions -------------------------------------------------------------------------------------


def test_evaluate_when_expressions() -> None:
    renderer = SopRenderer(make_bundle([{"private_message": {"text": "x"}}]))
    ctx = context(contact={"channel": "referral", "tags": ["已试驾"], "intent_level": "A"})
    assert renderer.evaluate("contact.channel == 'referral' and contact.intent_level in ['H', 'A']", ctx)
    assert not renderer.evaluate("'已试驾' not in contact.tags", ctx)
    with pytest.raises(SopRenderError) as caught:
        renderer.evaluate("contact.chanel == 'ad'", ctx)
    assert caught.value.code == "undefined_variable"
    with pytest.raises(SopRenderError) as caught:
        renderer.evaluate("contact.channel ==", ctx)
    assert caught.value.code == "jinja_syntax"
    with pytest.raises(SopRenderError) as caught:
        renderer.evaluate("''.__class__", ctx)
    assert caught.value.code == "unsafe_template"


# ---- problems (for the checker) ---------------------------------------------------------------------------


def test_problems_finds_every_broken_message_with_its_location() -> None:
    files = {
        "hello/default.j2": "你好",
        "hello/ad.j2": "广告\n{{ contact.nmae }}",  # not the sample contact's channel, still checked
        "hello/_part.j2": "{{ oops",  # partials are checked through the files that include them
        "day3.j2": "{{ ''.__class__ }}",
    }
    steps: list[dict[str, Any]] = [
        {"private_message": {"by_channel": "hello"}},
        {"when": "contact.stage == ", "private_message": {"text": "好"}},
        {"private_message": {"file": "day3.j2"}},
        {"notify_staff": {"text": "客户 {{ contact.nmae }} 到了"}},
        {
            "private_message": {
                "text": "ok",
                "attachments": [{"link": {"title": "{{ dealer.nmae }}", "url": "https://a.b/c"}}],
            }
        },
        {"private_message": {"text": "一切正常 {{ contact.name | mask_name }}"}},
    ]
    problems = SopRenderer(make_bundle(steps, files)).problems(SAMPLE_CONTEXT)
    found = sorted((p.loc, p.code, p.file, p.line) for p in problems)
    assert found == sorted(
        [
            (("steps", 0, "private_message", "by_channel"), "undefined_variable", "hello/ad.j2", 2),
            (("steps", 1, "when"), "jinja_syntax", None, 1),
            (("steps", 2, "private_message", "file"), "unsafe_template", "day3.j2", 1),
            (("steps", 3, "notify_staff", "text"), "undefined_variable", None, 1),
            (("steps", 4, "private_message", "attachments", 0, "link", "title"), "undefined_variable", None, 1),
        ]
    )


def test_problems_of_a_clean_bundle_is_empty_for_rich_and_sparse_contexts() -> None:
    steps: list[dict[str, Any]] = [
        {
            "private_message": {
                "text": "{% if contact.name %}{{ contact.name | mask_name }}{% endif %}您好，{{ now | cn_date }}"
            }
        },
        {
            "when": "contact.score > 50",
            "private_message": {"text": "{{ dealer.answers.price | default('请问顾问', true) }}"},
        },
    ]
    renderer = SopRenderer(make_bundle(steps))
    assert renderer.problems(SAMPLE_CONTEXT) == []
    assert renderer.problems(build_context(now=NOW)) == []
