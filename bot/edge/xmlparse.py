"""Hardened parsing of WeCom callback XML (outer envelope and decrypted message).

The document goes straight through the C expat parser (``pyexpat``) with our own handlers, which is what
defusedxml does, minus ElementTree's pure-Python parser and tree that it falls back to (the edge parses two
documents per callback, so this is the hottest code of a request):

- any entity declaration (general or parameter, internal or external, parsed or unparsed) and any
  external reference raise while parsing, before anything is expanded or fetched;
- a document type declaration that references an external DTD raises at once; an internal one is recorded
  and refused after the parse, so the error names the precise abuse (an entity bomb inside a DTD reports
  the entity, not just "DTD");
- size is bounded before parsing, depth and element count while parsing.

Fast path: a document of at most ``FAST_PATH_MAX_CHARS`` characters that does not contain ``<!DOCTYPE``
is parsed by ElementTree's C parser and tree, then walked with the same bounds. That is just as safe:
in XML, entities can only be declared inside a document type declaration, which must be spelt exactly
``<!DOCTYPE``; without one, only the five predefined entities and character references exist, and
nothing external can be referenced. Its size also bounds the work before the walk (fewer than 2,048
elements). Bytes take it only when they decode as UTF-8; anything else takes the handler path above.

Shape of the result: root ``<xml>``; each child element → its stripped text. An element whose children
are ``<Item>`` elements (and ``MemChangeList`` whatever its children) → a list, so one member is a
one-element list and none is an empty list. Any other nested element → a dict built by the same rules.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, NoReturn
from xml.parsers import expat

from scrm.errors import LianyiError

MAX_XML_BYTES = 512 * 1024
# Documents up to this many characters with no "<!DOCTYPE" take the fast path (see _parse_fast).
FAST_PATH_MAX_CHARS = 8 * 1024
_DOCTYPE = "<!DOCTYPE"
MAX_DEPTH = 6  # <xml> = 1, a field = 2, an <Item> = 3; a little room for nested structures
MAX_ELEMENTS = 4096
LIST_ELEMENTS = frozenset({"MemChangeList"})
ITEM_TAGS = frozenset({"Item", "item"})


class MalformedXml(LianyiError):
    """The document is not a WeCom callback XML we accept; the message says exactly why."""


class _Element:
    """An open element: its tag, its text, and its finished children as (tag, value) pairs."""

    __slots__ = ("children", "tag", "text")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.text: list[str] = []
        self.children: list[tuple[str, Any]] = []


def _combine(tag: str, children: list[tuple[str, Any]]) -> Any:
    """The value of an element from its children's (tag, value) pairs: a list or a dict."""
    if tag in LIST_ELEMENTS or all(child in ITEM_TAGS for child, _ in children):
        return [value for _, value in children]
    counts: dict[str, int] = {}
    for child, _ in children:
        counts[child] = counts.get(child, 0) + 1
    result: dict[str, Any] = {}
    for child, value in children:
        if counts[child] > 1:
            result.setdefault(child, []).append(value)
        else:
            result[child] = value
    return result


def _leaf(tag: str, text: str) -> Any:
    return [] if tag in LIST_ELEMENTS else text.strip()


class _Builder:
    """expat handlers: builds (tag, value) pairs bottom-up and refuses every abuse while parsing."""

    __slots__ = ("count", "doctype", "max_depth", "max_elements", "root", "stack")

    def __init__(self, max_depth: int, max_elements: int) -> None:
        self.stack: list[_Element] = []
        self.root: _Element | None = None
        self.count = 0
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.doctype: str | None = None

    def start(self, tag: str, _attrs: Any) -> None:
        self.count += 1
        if len(self.stack) >= self.max_depth:
            raise MalformedXml(f"elements nested deeper than {self.max_depth} levels")
        if self.count > self.max_elements:
            raise MalformedXml(f"more than {self.max_elements} elements")
        self.stack.append(_Element(tag))

    def end(self, _tag: str) -> None:
        elem = self.stack.pop()
        if self.stack:
            value = _combine(elem.tag, elem.children) if elem.children else _leaf(elem.tag, "".join(elem.text))
            self.stack[-1].children.append((elem.tag, value))
        else:
            self.root = elem

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text.append(text)

    def start_doctype(self, name: str, sysid: str | None, pubid: str | None, _internal: int) -> None:
        if sysid or pubid:
            raise MalformedXml(f"DOCTYPE {name!r} references an external DTD ({sysid or pubid!s})")
        self.doctype = name


def _entity_decl(
    name: str,
    _param: int,
    _value: str | None,
    _base: str | None,
    sysid: str | None,
    pubid: str | None,
    _notation: str | None,
) -> NoReturn:
    external = sysid or pubid
    if external:
        raise MalformedXml(f"external entity {name!r} declared ({external})")
    raise MalformedXml(f"entity declaration {name!r} (entity expansion is refused)")


def _unparsed_entity_decl(
    name: str, _base: str | None, sysid: str | None, pubid: str | None, _notation: str | None
) -> NoReturn:
    raise MalformedXml(f"external entity {name!r} declared ({sysid or pubid!s})")


def _external_ref(_context: str, _base: str | None, sysid: str | None, pubid: str | None) -> NoReturn:
    raise MalformedXml(f"external reference to {sysid or pubid!s}")


def _parse_tree(data: str | bytes, max_depth: int, max_elements: int) -> tuple[str, list[tuple[str, Any]]]:
    """The handler path: (root tag, its children's (tag, value) pairs)."""
    builder = _Builder(max_depth, max_elements)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = builder.start_doctype
    parser.EntityDeclHandler = _entity_decl
    parser.UnparsedEntityDeclHandler = _unparsed_entity_decl
    parser.ExternalEntityRefHandler = _external_ref
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise MalformedXml(f"not well-formed XML: {exc}") from None
    except ValueError as exc:  # pyexpat refuses declared multi-byte encodings other than UTF-8/16 (e.g. GBK)
        raise MalformedXml(f"unsupported document encoding: {exc}") from None
    if builder.doctype is not None:
        raise MalformedXml(f"DOCTYPE {builder.doctype!r} present (DTDs are refused)")
    if builder.root is None:  # expat reports a missing root itself; kept for the type checker
        raise MalformedXml("not well-formed XML: no element found")
    return builder.root.tag, builder.root.children


def _walk(elem: ET.Element, depth: int, max_depth: int) -> Any:
    """The value of an element of the fast path (``depth`` is its own: root = 1)."""
    if depth > max_depth:
        raise MalformedXml(f"elements nested deeper than {max_depth} levels")
    if not len(elem):
        return _leaf(elem.tag, elem.text or "")
    return _combine(elem.tag, [(child.tag, _walk(child, depth + 1, max_depth)) for child in elem])


def _parse_fast(text: str, max_depth: int, max_elements: int) -> tuple[str, list[tuple[str, Any]]]:
    """The fast path: (root tag, its children's (tag, value) pairs), with the same bounds."""
    parser = ET.XMLParser()
    try:
        parser.feed(text)
        root = parser.close()
    except ET.ParseError as exc:
        raise MalformedXml(f"not well-formed XML: {exc}") from None
    if sum(1 for _ in root.iter()) > max_elements:
        raise MalformedXml(f"more than {max_elements} elements")
    return root.tag, [(child.tag, _walk(child, 2, max_depth)) for child in root]


def _fast_path_text(text: str | bytes) -> str | None:
    """``text`` as str when it may take the fast path, else None."""
    if len(text) > FAST_PATH_MAX_CHARS:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if _DOCTYPE in text else text


def parse_xml_fields(
    text: str | bytes,
    *,
    max_bytes: int = MAX_XML_BYTES,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, Any]:
    """Parse a callback document into ``{element name: value}``; raise :class:`MalformedXml` with the reason."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8"))
    if size > max_bytes:
        raise MalformedXml(f"document is {size} bytes (limit {max_bytes})")
    if not text.strip():
        raise MalformedXml("empty document")
    fast = _fast_path_text(text)
    if fast is None:
        root, children = _parse_tree(text, max_depth, max_elements)
    else:
        root, children = _parse_fast(fast, max_depth, max_elements)
    if root != "xml":
        raise MalformedXml(f"root element is <{root[:64]}>, expected <xml>")
    fields: dict[str, Any] = {}
    for tag, value in children:
        if tag in fields:
            raise MalformedXml(f"element <{tag[:64]}> appears more than once")
        fields[tag] = value
    return fields
