"""The time of day follows Asia/Shanghai: the ``greeting``/``day_part`` filters and the shipped welcome, at the
band boundaries, with every instant given in UTC (China time is UTC+8, no daylight saving)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scrm.sop.render import SopRenderer
from scrm.sop.source import load_folder
from scrm.templating.context import build_context, day_part, greeting

SOP_DIR = Path(__file__).resolve().parents[2] / "sop_templates"

# (UTC instant, China time, part of the day, greeting)
BOUNDARIES: list[tuple[datetime, str, str, str]] = [
    (datetime(2026, 5, 7, 18, 47, tzinfo=UTC), "02:47", "凌晨", "您好"),
    (datetime(2026, 5, 7, 16, 0, tzinfo=UTC), "00:00", "凌晨", "您好"),
    (datetime(2026, 5, 7, 20, 59, tzinfo=UTC), "04:59", "凌晨", "您好"),
    (datetime(2026, 5, 7, 21, 0, tzinfo=UTC), "05:00", "早上", "早上好"),
    (datetime(2026, 5, 8, 2, 59, tzinfo=UTC), "10:59", "早上", "早上好"),
    (datetime(2026, 5, 8, 3, 0, tzinfo=UTC), "11:00", "中午", "中午好"),
    (datetime(2026, 5, 8, 4, 59, tzinfo=UTC), "12:59", "中午", "中午好"),
    (datetime(2026, 5, 8, 5, 0, tzinfo=UTC), "13:00", "下午", "下午好"),
    (datetime(2026, 5, 8, 9, 59, tzinfo=UTC), "17:59", "下午", "下午好"),
    (datetime(2026, 5, 8, 10, 0, tzinfo=UTC), "18:00", "晚上", "晚上好"),
    (datetime(2026, 5, 8, 15, 59, tzinfo=UTC), "23:59", "晚上", "晚上好"),
]


@pytest.mark.parametrize(("at", "local", "part", "words"), BOUNDARIES)
def test_filters_use_china_time(at: datetime, local: str, part: str, words: str) -> None:
    assert f"{at.astimezone(build_context(now=at)['now'].tzinfo):%H:%M}" == local
    assert (day_part(at), greeting(at)) == (part, words)


@pytest.mark.parametrize(("at", "local", "part", "words"), BOUNDARIES)
def test_shipped_sop_welcome_greets_by_china_time(at: datetime, local: str, part: str, words: str) -> None:
    bundle = load_folder(SOP_DIR).bundles["new_customer_nurture"]
    welcome = bundle.template.steps[0].welcome
    assert welcome is not None
    context = build_context(contact={"external_userid": "wmX", "name": "王先生"}, staff={"name": "张三"}, now=at)
    text = SopRenderer(bundle).render(welcome, context, channel="qr").text
    assert text.startswith(f"{words}，王先生！"), (local, part, text)


def test_the_welcome_at_02_47_china_time_is_not_good_morning() -> None:
    at = datetime(2026, 5, 7, 18, 47, tzinfo=UTC)  # 02:47 in Shanghai, the reported case
    bundle = load_folder(SOP_DIR).bundles["new_customer_nurture"]
    welcome = bundle.template.steps[0].welcome
    assert welcome is not None
    context = build_context(contact={"external_userid": "wmX", "name": ""}, now=at)
    text = SopRenderer(bundle).render(welcome, context, channel="qr").text
    assert text.startswith("您好！")
    assert "早上好" not in text


def test_empty_values_and_naive_times() -> None:
    assert (day_part(""), greeting(None)) == ("", "")
    assert greeting("2026-05-08 02:47") == "您好"  # a time without zone is China time, as in the other filters
    assert greeting("2026-05-07T18:47:00+00:00") == "您好"
