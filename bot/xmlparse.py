"""Hardened parsing of WeCom callback XML (outer envelope and decrypted message).

defusedxml's expat parser with entity declarations and external references forbidden; a document type
declaration is recorded and refused after the parse, so the error names the precise abuse (an entity
bomb inside a DTD reports the entity, not just "DTD"). Size, depth and element count are bounded before
any tree is walked.

Shape of the result: root ``<xml>``; each child element → its stripped text. An element whose children
are ``<Item>`` elements (and ``MemChangeList`` whatever its children) → a list, so one member is a
one-element list and none is an empty list. Any other nested element → a dict built by the same rules.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from scrm.errors import LianyiError

MAX_XML_BYTES = 512 * 1024
MAX_DEPTH = 6  # <xml> = 1, a field = 2, an <Item> = 3; a little room for nested structures
MAX_ELEMENTS = 4096
LIST_ELEMENTS = frozenset({"MemChangeList"})
ITEM_TAGS = frozenset({"Item", "item"})


class MalformedXml(LianyiError):
    """The document is not a WeCom callback XML we accept; the message says exactly why."""


class _BoundedTreeBuilder:
    """A TreeBuilder target that refuses documents nested too deep or with too many elements."""

    def __init__(self, max_depth: int, max_elements: int) -> None:
        self._builder = ET.TreeBuilder()
        self._depth = 0
        self._count = 0
        self._max_depth = max_depth
        self._max_elements = max_elements

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._depth += 1
        self._count += 1
        if self._depth > self._max_depth:
            raise MalformedXml(f"elements nested deeper than {self._max_depth} levels")
        if self._count > self._max_elements:
            raise MalformedXml(f"more than {self._max_elements} elements")
        return self._builder.start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> ET.Element:
        return self._builder.close()


def _parse_tree(data: str | bytes, max_depth: int, max_elements: int) -> ET.Element:
    target = _BoundedTreeBuilder(max_depth, max_elements)
    parser = DefusedXMLParser(target=target, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    doctypes: list[str] = []

    def record_doctype(name: str, sysid: str | None, pubid: str | None, has_internal_subset: int) -> None:
        if sysid or pubid:
            raise MalformedXml(f"DOCTYPE {name!r} references an external DTD ({sysid or pubid!s})")
        doctypes.append(name)

    parser.parser.StartDoctypeDeclHandler = record_doctype
    try:
        parser.feed(data)
        root: ET.Element = parser.close()
    except EntitiesForbidden as exc:
        external = exc.sysid or exc.pubid
        if external:
            raise MalformedXml(f"external entity {exc.name!r} declared ({external})") from None
        raise MalformedXml(f"entity declaration {exc.name!r} (entity expansion is refused)") from None
    except ExternalReferenceForbidden as exc:
        raise MalformedXml(f"external reference to {exc.sysid or exc.pubid!s}") from None
    except DTDForbidden as exc:  # only if defusedxml is configured to forbid DTDs itself
        raise MalformedXml(f"DOCTYPE {exc.name!r} present") from None
    except ET.ParseError as exc:
        raise MalformedXml(f"not well-formed XML: {exc}") from None
    if doctypes:
        raise MalformedXml(f"DOCTYPE {doctypes[0]!r} present (DTDs are refused)")
    return root


def _element_value(elem: ET.Element) -> Any:
    children = list(elem)
    if elem.tag in LIST_ELEMENTS or (children and all(c.tag in ITEM_TAGS for c in children)):
        return [_element_value(c) for c in children]
    if not children:
        return (elem.text or "").strip()
    repeated = _repeated(children)
    result: dict[str, Any] = {}
    for child in children:
        value = _element_value(child)
        if child.tag in repeated:
            result.setdefault(child.tag, []).append(value)
        else:
            result[child.tag] = value
    return result


def _repeated(children: list[ET.Element]) -> set[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for child in children:
        (twice if child.tag in seen else seen).add(child.tag)
    return twice


def parse_xml_fields(
    text: str | bytes,
    *,
    max_bytes: int = MAX_XML_BYTES,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, Any]:
    """Parse a callback document into ``{element name: value}``; raise :class:`MalformedXml` with the reason."""
    size = len(text.encode("utf-8")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise MalformedXml(f"document is {size} bytes (limit {max_bytes})")
    if not text.strip():
        raise MalformedXml("empty document")
    root = _parse_tree(text, max_depth, max_elements)
    if root.tag != "xml":
        raise MalformedXml(f"root element is <{root.tag[:64]}>, expected <xml>")
    fields: dict[str, Any] = {}
    for child in root:
        if child.tag in fields:
            raise MalformedXml(f"element <{child.tag[:64]}> appears more than once")
        fields[child.tag] = _element_value(child)
    return fields
