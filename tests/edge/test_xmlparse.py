"""Hardened callback XML parsing: the accepted shapes, and a precise refusal for every abuse."""

from __future__ import annotations

import pytest

from bot.edge.xmlparse import MAX_DEPTH, MalformedXml, parse_xml_fields
from scrm.errors import LianyiError
from tests.edge.wecom_callbacks import VECTORS

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE xml [\n <!ENTITY lol0 "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
    + "]>\n<xml><Content>&lol9;</Content></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Content>&xxe;</Content></xml>'
)


def test_official_post_plaintext() -> None:
    fields = parse_xml_fields(VECTORS["official"]["post"]["expected_plaintext"])
    assert fields == {
        "ToUserName": "wx5823bf96d3bd56c7",
        "FromUserName": "mycreate",
        "CreateTime": "1409659813",
        "MsgType": "text",
        "Content": "hello",
        "MsgId": "4561255354251345929",
        "AgentID": "218",
    }


def test_bytes_and_declared_encoding() -> None:
    doc = '<?xml version="1.0" encoding="utf-8"?><xml><Content> 试驾 </Content><Empty/></xml>'
    assert parse_xml_fields(doc.encode()) == {"Content": "试驾", "Empty": ""}
    assert parse_xml_fields(doc) == {"Content": "试驾", "Empty": ""}


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ("<Item><![CDATA[wmA]]></Item>", ["wmA"]),
        ("<Item>wmA</Item><Item>wmB</Item>", ["wmA", "wmB"]),
        ("", []),
    ],
    ids=["one-item", "two-items", "no-items"],
)
def test_mem_change_list_is_always_a_list(members: str, expected: list[str]) -> None:
    fields = parse_xml_fields(f"<xml><ChatId>wr1</ChatId><MemChangeList>{members}</MemChangeList></xml>")
    assert fields["MemChangeList"] == expected


def test_any_item_container_is_a_list_and_other_nesting_a_dict() -> None:
    doc = (
        "<xml><Tags><Item>t1</Item></Tags>"
        "<Location><X>23.1</X><Y>113.3</Y></Location>"
        "<Pics><Count>2</Count><PicList><item><Md5>a</Md5></item><item><Md5>b</Md5></item></PicList></Pics></xml>"
    )
    assert parse_xml_fields(doc) == {
        "Tags": ["t1"],
        "Location": {"X": "23.1", "Y": "113.3"},
        "Pics": {"Count": "2", "PicList": [{"Md5": "a"}, {"Md5": "b"}]},
    }


def test_repeated_nested_element_becomes_a_list() -> None:
    doc = "<xml><Box><Name>a</Name><Name>b</Name><Kind>k</Kind></Box></xml>"
    assert parse_xml_fields(doc) == {"Box": {"Name": ["a", "b"], "Kind": "k"}}


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (BILLION_LAUGHS, "entity declaration 'lol0'"),
        (EXTERNAL_ENTITY, "external entity 'xxe' declared (file:///etc/passwd)"),
        ('<!DOCTYPE xml SYSTEM "http://attacker.example/x.dtd"><xml/>', "references an external DTD"),
        ("<!DOCTYPE xml [<!ELEMENT xml ANY>]><xml><A>1</A></xml>", "DOCTYPE 'xml' present"),
        ('{"ToUserName": "wx5823bf96d3bd56c7"}', "not well-formed XML"),
        ("<xml><A>1</A>", "not well-formed XML"),
        ("<xml><A>&undefined;</A></xml>", "undefined entity"),
        ("<xml/><xml/>", "not well-formed XML"),
        ("<root><A>1</A></root>", "root element is <root>, expected <xml>"),
        ("<xml><A>1</A><A>2</A></xml>", "element <A> appears more than once"),
        ("", "empty document"),
        (b"   \n", "empty document"),
        ("<xml>" + "<a>" * (MAX_DEPTH + 1) + "</a>" * (MAX_DEPTH + 1) + "</xml>", "nested deeper than"),
        ("<xml><A>" + "<b/>" * 5000 + "</A></xml>", "more than 4096 elements"),
    ],
    ids=[
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "internal-dtd",
        "json",
        "unclosed",
        "undefined-entity",
        "two-roots",
        "wrong-root",
        "duplicate-field",
        "empty",
        "blank-bytes",
        "too-deep",
        "too-many-elements",
    ],
)
def test_refusals_name_the_reason(document: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedXml, match=reason.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_xml_fields(document)
    assert isinstance(info.value, LianyiError)


def test_size_limit_is_checked_before_parsing() -> None:
    doc = "<xml><Content>" + "x" * 2000 + "</Content></xml>"
    assert parse_xml_fields(doc, max_bytes=4096)["Content"] == "x" * 2000
    with pytest.raises(MalformedXml, match=r"document is \d+ bytes \(limit 1024\)"):
        parse_xml_fields(doc, max_bytes=1024)


def test_external_entity_never_reads_the_file() -> None:
    with pytest.raises(MalformedXml) as info:
        parse_xml_fields(EXTERNAL_ENTITY)
    assert "root:" not in str(info.value)
