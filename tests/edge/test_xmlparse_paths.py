"""Both parsing paths of bot.edge.xmlparse (C fast path for small DTD-free documents, expat handlers otherwise)
give the same fields and the same refusals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.edge.xmlparse import FAST_PATH_MAX_CHARS, MAX_DEPTH, MalformedXml, parse_xml_fields

GROUP_UPDATE = (
    "<xml>\n<ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    "<CreateTime>1403610513</CreateTime>\n<Event><![CDATA[change_external_chat]]></Event>\n"
    "<ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId>\n"
    "<MemChangeList><Item><![CDATA[wmA]]></Item><Item>wmB</Item></MemChangeList>\n"
    "<Empty></Empty><NoItems><![CDATA[]]></NoItems>\n"
    "<Location><X>23.1</X><Y>113.3</Y></Location>\n"
    "<Box><Name>a</Name><Name>b</Name><Kind>k</Kind></Box>\n"
    "<Content><![CDATA[ 这台车落地多少钱？ ]]></Content>\n</xml>"
)
EXPECTED = {
    "ToUserName": "wx5823bf96d3bd56c7",
    "CreateTime": "1403610513",
    "Event": "change_external_chat",
    "ChatId": "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA",
    "MemChangeList": ["wmA", "wmB"],
    "Empty": "",
    "NoItems": "",
    "Location": {"X": "23.1", "Y": "113.3"},
    "Box": {"Name": ["a", "b"], "Kind": "k"},
    "Content": "这台车落地多少钱？",
}
PADDING = "<!--" + "x" * FAST_PATH_MAX_CHARS + "-->"  # a comment long enough to leave the fast path


def _fast(doc: str) -> str | bytes:
    return doc


def _large(doc: str) -> str | bytes:
    return doc.replace("<xml>", "<xml>" + PADDING, 1)


def _utf16_bytes(doc: str) -> str | bytes:
    """Not UTF-8, so the bytes go to expat, which reads the byte-order mark."""
    return doc.encode("utf-16")


PATHS: list[Callable[[str], str | bytes]] = [_fast, _large, _utf16_bytes]


@pytest.mark.parametrize("path", PATHS, ids=["fast", "handlers-large", "handlers-utf16"])
def test_every_path_gives_the_same_fields(path: Callable[[str], str | bytes]) -> None:
    assert parse_xml_fields(path(GROUP_UPDATE)) == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=["fast", "handlers-large", "handlers-utf16"])
@pytest.mark.parametrize(
    ("document", "limits", "reason"),
    [
        ("<xml>" + "<a>" * MAX_DEPTH + "</a>" * MAX_DEPTH + "</xml>", {}, "nested deeper than 6 levels"),
        ("<xml><A>1</A><B>2</B><C><D>3</D></C></xml>", {"max_elements": 4}, "more than 4 elements"),
        ("<xml><A>1</A><A>2</A></xml>", {}, "element <A> appears more than once"),
        ("<root><A>1</A></root>", {}, "root element is <root>, expected <xml>"),
        ("<xml><A>&undefined;</A></xml>", {}, "undefined entity"),
        ("<xml><A>1</A>", {}, "not well-formed XML"),
    ],
    ids=["too-deep", "too-many-elements", "duplicate-field", "wrong-root", "undefined-entity", "unclosed"],
)
def test_every_path_refuses_with_the_same_reason(
    path: Callable[[str], str | bytes], document: str, limits: dict[str, int], reason: str
) -> None:
    with pytest.raises(MalformedXml, match=reason):
        parse_xml_fields(path(document), **limits)


def test_a_small_document_with_a_dtd_still_names_the_abuse() -> None:
    doc = '<!DOCTYPE xml [<!ENTITY e "x">]><xml><A>&e;</A></xml>'
    assert len(doc) < FAST_PATH_MAX_CHARS
    with pytest.raises(MalformedXml, match="entity declaration 'e'"):
        parse_xml_fields(doc)
    with pytest.raises(MalformedXml, match="entity declaration 'e'"):
        parse_xml_fields(doc.encode())


def test_a_declared_multibyte_encoding_is_malformed_not_a_crash() -> None:
    doc = '<?xml version="1.0" encoding="GBK"?><xml><Content>试驾</Content></xml>'.encode("gbk")
    with pytest.raises(MalformedXml, match="unsupported document encoding"):
        parse_xml_fields(doc)
