"""The templates shipped in sop_templates/: they pass the checker, render with rich and sparse data, time
their steps as their comments say, and the README documents every feature of the format."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from scrm.audience import Audience
from scrm.folder_check import check_folder
from scrm.links import LinkSigner
from scrm.sop.render import SopRenderer
from scrm.sop.source import FolderLoad, load_folder
from scrm.sop.spec import ACTIONS, EVENTS, Exit, Message, TemplateBundle
from scrm.templating.context import CHINA_TZ, FILTERS, SAMPLE_CONTEXT, VARIABLES, build_context
from scrm.timing import next_cron_fire, step_due

SOP_DIR = Path(__file__).resolve().parents[2] / "sop_templates"
SHIPPED = {
    "new_customer_nurture": "新客欢迎与首周培育",
    "test_drive_invite": "试驾邀约",
    "lost_recall": "战败召回",
    "silent_wakeup": "沉默唤醒",
    "owner_care": "车主关怀",
    "festival_greetings": "节日问候",
    "group_friday_post": "车友群周五推送",
    "group_keyword_price": "群关键词回复：价格优惠",
    "group_keyword_test_drive": "群关键词回复：试驾预约",
    "group_keyword_address": "群关键词回复：地址与营业时间",
}
NOW = datetime(2026, 5, 8, 2, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def folder() -> FolderLoad:
    return load_folder(SOP_DIR)


def sparse_context(kind: str, now: datetime = NOW) -> dict[str, Any]:
    """What the engine may know about a brand-new subject: ids only, every name empty."""
    if kind == "group":
        return build_context(group={"chat_id": "wrSPARSE"}, now=now)
    return build_context(contact={"external_userid": "wmSPARSE"}, now=now)


def messages(bundle: TemplateBundle) -> Iterator[tuple[str, Message]]:
    for index, step in enumerate(bundle.template.steps):
        if step.message is not None:
            yield bundle.template.step_id(index), step.message


def test_the_checker_finds_no_problem() -> None:
    assert [str(p) for p in check_folder(SOP_DIR)] == []


def test_every_shipped_template_loads(folder: FolderLoad) -> None:
    assert folder.problems == []
    assert {bundle_id: b.template.name for bundle_id, b in folder.bundles.items()} == SHIPPED


@pytest.mark.parametrize("template_id", sorted(SHIPPED))
@pytest.mark.parametrize("data", ["sample", "sparse"])
def test_every_message_renders(folder: FolderLoad, template_id: str, data: str) -> None:
    bundle = folder.bundles[template_id]
    ctx = SAMPLE_CONTEXT if data == "sample" else sparse_context(bundle.template.kind)
    renderer = SopRenderer(bundle)
    assert renderer.problems(ctx) == []
    for step_id, message in messages(bundle):
        rendered = renderer.render(message, ctx)
        assert rendered.text or rendered.attachments, step_id
        assert "{{" not in rendered.text and "{%" not in rendered.text, step_id
        if data == "sparse":  # no dangling "，" or "的" around names the engine did not know
            assert "None" not in rendered.text and not rendered.text.startswith(("，", "的")), step_id


def test_every_tag_used_is_in_the_vocabulary(folder: FolderLoad) -> None:
    refs: list[str] = []
    for bundle in folder.bundles.values():
        template = bundle.template
        refs += template.trigger.tags + template.exit.tags_added
        for condition in (template.audience.tags, template.audience.group_tags):
            refs += condition.names() if condition else []
        for step in template.steps:
            refs += (step.add_tags or []) + (step.remove_tags or [])
    assert refs, "the shipped templates use tags"
    assert [ref for ref in refs if folder.tags.resolve(ref) is None] == []


@pytest.mark.parametrize("channel", ["qr", "ad", "referral", "event", "live", "store"])
def test_welcome_is_chosen_by_channel(folder: FolderLoad, channel: str) -> None:
    bundle = folder.bundles["new_customer_nurture"]
    welcome = bundle.template.steps[0].welcome
    assert welcome is not None
    rendered = SopRenderer(bundle).render(welcome, SAMPLE_CONTEXT, channel=channel)
    expected = f"welcome/{channel}.j2" if (SOP_DIR / "welcome" / f"{channel}.j2").is_file() else "welcome/default.j2"
    assert rendered.file == expected
    assert "张三" in rendered.text


@pytest.mark.parametrize("added_at_local", ["00:01", "08:00", "09:59", "10:00", "15:30", "23:59"])
def test_nurture_days_fall_on_day_1_3_7_at_ten(folder: FolderLoad, added_at_local: str) -> None:
    template = folder.bundles["new_customer_nurture"].template
    hour, minute = map(int, added_at_local.split(":"))
    added = datetime(2026, 2, 27, hour, minute, tzinfo=CHINA_TZ)  # across a month end
    due = {
        template.step_id(i): step_due(added, after=s.after, at=s.at, weekdays=s.weekday).astimezone(CHINA_TZ)
        for i, s in enumerate(template.steps)
    }
    assert due["welcome"] == added
    for step_id, day in (("day1", 1), ("day3", 3), ("day3_referral", 3), ("day7", 7)):
        assert due[step_id] == datetime(2026, 2, 27, 10, 0, tzinfo=CHINA_TZ) + timedelta(days=day), step_id


def test_nurture_day3_splits_by_channel_with_when(folder: FolderLoad) -> None:
    bundle = folder.bundles["new_customer_nurture"]
    renderer = SopRenderer(bundle)
    whens = {bundle.template.step_id(i): s.when for i, s in enumerate(bundle.template.steps) if s.when}
    referral = build_context(contact={"channel": "referral"}, now=NOW)
    assert renderer.evaluate(whens["day3_referral"], referral) and not renderer.evaluate(whens["day3"], referral)
    assert renderer.evaluate(whens["day3"], SAMPLE_CONTEXT) and not renderer.evaluate(
        whens["day3_referral"], SAMPLE_CONTEXT
    )


def test_nurture_links_are_tracked(folder: FolderLoad) -> None:
    signer = LinkSigner(b"shipped", "https://lianyi.example.com")
    bundle = folder.bundles["new_customer_nurture"]
    renderer = SopRenderer(bundle, links=signer)
    sent = [
        s.message
        for s in bundle.template.steps
        if s.message and (not s.when or renderer.evaluate(s.when, SAMPLE_CONTEXT))
    ]
    rendered = [renderer.render(m, SAMPLE_CONTEXT) for m in sent if m is not None]
    urls = [a["link"]["url"] for r in rendered for a in r.attachments if a["msgtype"] == "link"]
    assert len(urls) == 2  # day 3 (booking) and day 7 (brochure); the sample contact is not a referral
    tracked = [signer.unwrap(urlsplit(u).path.removeprefix("/l/")) for u in urls]
    assert [t.url for t in tracked] == [
        "https://m.example.com/test-drive?dealer=BJ001",
        "https://m.example.com/brochure?dealer=BJ001",
    ]
    assert {t.source for t in tracked} == {"sop:new_customer_nurture"}


def test_test_drive_invite_sends_a_card_then_a_booking_link_and_ends_on_the_tag(folder: FolderLoad) -> None:
    template = folder.bundles["test_drive_invite"].template
    assert template.trigger.event == "contact.intent_level" and template.trigger.level == "A"
    assert [s.action for s in template.steps][:2] == ["advisor_task", "private_message"]
    assert folder.tags.resolve(template.exit.tags_added[0]) == ("状态", "已试驾")


def test_owner_care_runs_delivery_day_week_and_first_service(folder: FolderLoad) -> None:
    template = folder.bundles["owner_care"].template
    delivered = datetime(2026, 6, 30, 16, 0, tzinfo=CHINA_TZ)
    due = {
        template.step_id(i): step_due(delivered, after=s.after, at=s.at, weekdays=s.weekday).astimezone(CHINA_TZ)
        for i, s in enumerate(template.steps)
    }
    assert due["delivery"] == delivered
    assert due["day7"] == datetime(2026, 7, 7, 10, 0, tzinfo=CHINA_TZ)
    assert due["service"] == datetime(2026, 6, 30, 10, 0, tzinfo=CHINA_TZ) + timedelta(days=180)
    assert template.steps[3].advisor_task is not None


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2027-02-06", "春节"),
        ("2027-02-09", "春节"),  # deferred a few days by the policy: still the right festival
        ("2027-02-20", "元宵节"),
        ("2027-06-09", "端午节"),
        ("2027-09-15", "中秋节"),
        ("2027-10-01", "国庆节"),
        ("2026-12-20", "节假日"),  # before any listed date: a plain greeting
    ],
)
def test_festival_greeting_matches_the_date(folder: FolderLoad, day: str, expected: str) -> None:
    bundle = folder.bundles["festival_greetings"]
    now = datetime.fromisoformat(day).replace(hour=10, tzinfo=CHINA_TZ)
    message = bundle.template.steps[0].private_message
    assert message is not None
    text = SopRenderer(bundle).render(message, build_context(now=now)).text
    assert f"{expected}期间" in text


def test_festival_dates_are_all_greeted(folder: FolderLoad) -> None:
    bundle = folder.bundles["festival_greetings"]
    message = bundle.template.steps[0].private_message
    assert message is not None
    texts = set()
    for day in bundle.template.trigger.dates:
        now = datetime.combine(day, bundle.template.trigger.at or datetime.min.time(), tzinfo=CHINA_TZ)
        texts.add(SopRenderer(bundle).render(message, {**SAMPLE_CONTEXT, "now": now}).text)
    assert len(texts) == len(bundle.template.trigger.dates)


def test_friday_post_fires_on_fridays_at_six_and_rotates_its_tip(folder: FolderLoad) -> None:
    bundle = folder.bundles["group_friday_post"]
    assert bundle.template.trigger.cron is not None
    fire = next_cron_fire(bundle.template.trigger.cron, datetime(2026, 5, 4, 0, 0, tzinfo=CHINA_TZ))
    assert fire is not None
    assert fire.astimezone(CHINA_TZ) == datetime(2026, 5, 8, 18, 0, tzinfo=CHINA_TZ)
    assert bundle.template.audience.name == "*车友群*"
    message = bundle.template.steps[0].group_message
    assert message is not None
    one, two = (
        SopRenderer(bundle).render(message, sparse_context("group", fire + timedelta(weeks=w))).text for w in (0, 1)
    )
    assert one != two


@pytest.mark.parametrize(
    ("template_id", "question", "answer_key"),
    [
        ("group_keyword_price", "这车落地价多少钱", "price"),
        ("group_keyword_test_drive", "周末能试驾吗", "test_drive"),
        ("group_keyword_address", "你们店在哪", "address"),
    ],
)
def test_keyword_replies_use_the_dealer_answer_else_a_default(
    folder: FolderLoad, template_id: str, question: str, answer_key: str
) -> None:
    bundle = folder.bundles[template_id]
    trigger = bundle.template.trigger
    assert trigger.event == "message.keyword" and trigger.scope == "group"
    assert any(keyword in question for keyword in trigger.keywords)
    message = bundle.template.steps[0].group_message
    assert message is not None
    renderer = SopRenderer(bundle)
    answered = build_context(dealer={"answers": {answer_key: "本店答复"}}, now=NOW)
    assert renderer.render(message, answered).text == "本店答复"
    fallback = renderer.render(message, sparse_context("group")).text
    assert fallback and fallback != "本店答复"


# ---- README -----------------------------------------------------------------------------------------------

POLICY_KEYS = (
    "timezone",
    "quiet_hours",
    "quiet_hours_exempt",
    "caps",
    "per_day",
    "per_week",
    "group_send_quota",
    "on_limit",
    "max_defer_days",
    "priority",
)


def test_readme_documents_every_feature_of_the_format() -> None:
    readme = (SOP_DIR / "README.md").read_text(encoding="utf-8")
    english = readme[readme.index("## English") :]
    features = [
        *EVENTS,
        *ACTIONS,
        *FILTERS,
        *VARIABLES,
        *Audience.model_fields,
        *Exit.model_fields,
        *POLICY_KEYS,
        "cron",
        "dates",
        "immediately",
        "after",
        "at",
        "weekday",
        "when",
        "attach_link",
        "attach_image",
        "attach_miniprogram",
        "by_channel",
        "tags.yaml",
    ]
    assert [f for f in features if f"`{f}" not in readme] == []
    assert [template_id for template_id in SHIPPED if f"{template_id}.yaml" not in readme] == []
    assert readme.index("## English") > len(readme) // 2  # Chinese first
    assert "新版本" in readme and "new version" in english
