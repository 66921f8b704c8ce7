"""Reading WeCom's flat callback mapping: element name → text, nested lists such as ``MemChangeList`` → list.

The edge turns the decrypted XML into this mapping (:mod:`bot.edge.xmlparse`); the typed events of
:mod:`bot.edge.events` declare which element each attribute comes from and which reader turns it into a value.
Readers never raise: a missing or malformed element reads as empty (``""``, ``None``, ``()``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

Fields = Mapping[str, Any]
Reader = Callable[[Fields, str], Any]


def text(fields: Fields, name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return str(value)


def integer(fields: Fields, name: str) -> int | None:
    raw = text(fields, name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def items(fields: Fields, name: str) -> list[str]:
    """Always a list: a single ``<Item>`` arrives as one str, several as a list, none as missing."""
    value = fields.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in (part.strip() for part in value.split(",")) if v]
    if isinstance(value, Mapping):
        inner = value.get("Item", [])
        return items({"x": inner}, "x")
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def item_tuple(fields: Fields, name: str) -> tuple[str, ...]:
    return tuple(items(fields, name))


def digest(*parts: str) -> str:
    """A short stable digest of ``parts`` (for dedup keys of events WeCom gives no id)."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]
