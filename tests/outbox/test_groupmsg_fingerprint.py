"""The content fingerprint the add_msg_template executor matches an earlier attempt's task by."""

from __future__ import annotations

from bot.outbox.executors import _fingerprint


def link(url: str, title: str = "报名") -> dict[str, object]:
    return {"msgtype": "link", "link": {"title": title, "url": url}}


def test_same_text_and_links_match() -> None:
    assert _fingerprint("周六试驾", [link("https://a.example/1")]) == _fingerprint(
        "周六试驾", [link("https://a.example/1")]
    )


def test_a_different_link_url_title_or_order_does_not_match() -> None:
    base = _fingerprint("周六试驾", [link("https://a.example/1"), {"msgtype": "image", "image": {"media_id": "m1"}}])
    assert _fingerprint("周六试驾", [link("https://a.example/2"), {"msgtype": "image", "image": {}}]) != base
    assert _fingerprint("周六试驾", [link("https://a.example/1", "预约"), {"msgtype": "image", "image": {}}]) != base
    assert _fingerprint("周六试驾", [{"msgtype": "image", "image": {}}, link("https://a.example/1")]) != base
    assert _fingerprint("周日试驾", [link("https://a.example/1"), {"msgtype": "image", "image": {}}]) != base


def test_image_media_ids_are_not_compared() -> None:
    """WeCom may list an image with another media id than the one sent."""
    one = _fingerprint("", [{"msgtype": "image", "image": {"media_id": "m1"}}])
    assert one == _fingerprint("", [{"msgtype": "image", "image": {"media_id": "m2", "pic_url": "x"}}])


def test_mini_program_page_counts() -> None:
    mini = {"msgtype": "miniprogram", "miniprogram": {"appid": "wx1", "page": "pages/a", "title": "t"}}
    other = {"msgtype": "miniprogram", "miniprogram": {"appid": "wx1", "page": "pages/b", "title": "t"}}
    assert _fingerprint("", [mini]) != _fingerprint("", [other])
