"""The anonymiser of one customer's traces in free text and JSON.

A :class:`Redactor` knows the customer's external_userid (replaced by a pseudonym that is random per erasure,
so nothing links the kept rows back to the person) and the strings that identify or quote them: their name,
remarks, descriptions, phone numbers, channel state, and every message text. In a text each such string is
replaced by ``***``; a mainland mobile number (``1[3-9]`` + 9 digits) is masked wherever it appears. In JSON,
the values of keys that carry message text (``text``, ``content``, ``description`` …) are blanked as a whole
when ``blank_text_keys`` is set — a snippet cut from a message is no exact substring of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MASK = "***"
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
MIN_LENGTH = 2  # a one-character name or message would blank unrelated text
TEXT_KEYS = frozenset(
    {"text", "content", "description", "asked", "snippet", "note", "lost_note", "remark", "remark_mobiles", "name"}
)


@dataclass
class Redactor:
    external_userid: str
    pseudonym: str
    values: set[str] = field(default_factory=set)

    def learn(self, strings: Iterable[str | None]) -> None:
        """Add strings that identify or quote the customer (blank and one-character strings are ignored)."""
        for value in strings:
            value = (value or "").strip()
            if len(value) >= MIN_LENGTH and value != self.external_userid:
                self.values.add(value)

    def _ordered(self) -> list[str]:
        return sorted(self.values, key=len, reverse=True)  # longest first: a name inside a message goes with it

    def text(self, value: str | None) -> str:
        if not value:
            return value or ""
        result = value.replace(self.external_userid, self.pseudonym) if self.external_userid else value
        for secret in self._ordered():
            if secret in result:
                result = result.replace(secret, MASK)
        return MOBILE.sub(MASK, result)

    def json(self, value: Any, *, blank_text_keys: bool = True, drop_from_lists: bool = False) -> Any:
        """A copy of ``value`` with every string redacted; ``drop_from_lists`` removes the customer's id from
        lists (the recipients of a command still to be sent) instead of replacing it."""
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if blank_text_keys and key in TEXT_KEYS and isinstance(item, str | list):
                    out[key] = "" if isinstance(item, str) else []
                else:
                    out[key] = self.json(item, blank_text_keys=blank_text_keys, drop_from_lists=drop_from_lists)
            return out
        if isinstance(value, list):
            items = [i for i in value if not (drop_from_lists and i == self.external_userid)]
            return [self.json(i, blank_text_keys=blank_text_keys, drop_from_lists=drop_from_lists) for i in items]
        if isinstance(value, str):
            return self.text(value)
        return value

    def mentions(self, value: Any) -> bool:
        """Whether ``value`` (text or JSON) holds the customer's id or one of their strings."""
        if isinstance(value, dict):
            return any(self.mentions(k) or self.mentions(v) for k, v in value.items())
        if isinstance(value, list):
            return any(self.mentions(i) for i in value)
        if isinstance(value, str):
            return self.text(value) != value
        return False
