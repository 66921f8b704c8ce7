"""Channel attribution carried in the contact-way ``state`` (WeCom allows at most 30 characters).

Grammar (version 1)::

    state    = "L1" 1*5( "~" field )        ; at most 30 characters in all
    fields   = channel, dealer, advisor, referrer, campaign   (in this order; trailing empty ones dropped)
    channel  = code | name
    code     = one lowercase letter from CHANNEL_CODES ("q" = qr, "a" = ad, "r" = referral, …)
    name     = [a-z][a-z0-9_]{1,11}         ; a channel without a one-letter code, written out
    dealer   = [A-Za-z0-9]{1,16}            ; the dealer code (Dealer.code)
    advisor  = [A-Za-z0-9_.@-]{1,64}        ; the advisor's WeCom userid
    referrer = [A-Za-z0-9_-]{1,32}          ; a short referral code (e.g. an owner's code), not an external_userid
    campaign = [A-Za-z0-9_-]{1,32}          ; a short campaign code

A field may be empty in the middle (``L1~q~~zhangsan`` = QR code, no dealer, advisor zhangsan). ``~`` never
occurs inside a field, and every character is URL-safe, so the state also survives acquisition links.

Examples::

    L1~q~BJ001~zhangsan             QR code of advisor zhangsan at dealer BJ001
    L1~r~SH002~lisi~K7Q2            referral by owner code K7Q2
    L1~a~GZ010~~~spring24           an ad for campaign spring24, no advisor yet
    L1~livestream~CD003             a channel without a one-letter code

:func:`parse_state` never raises. A state that is not ours (no ``L1~`` prefix, e.g. one written by another
tool) keeps its raw value and parses to empty fields; inside our grammar a field that breaks its rule is
dropped on its own and the others are kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scrm.errors import StateGrammarError

STATE_MAX_LEN = 30
PREFIX = "L1"
SEPARATOR = "~"

# One-letter codes keep states short. A name listed here is always written as its code.
CHANNEL_CODES: Mapping[str, str] = {
    "qr": "q",  # 渠道活码 / a staff member's QR code
    "ad": "a",  # 广告投放
    "referral": "r",  # 老带新 (owner referral)
    "event": "e",  # 车展 / 试驾会 / 线下活动
    "store": "s",  # 到店
    "live": "l",  # 直播
    "web": "w",  # 官网 / 小程序
    "poster": "p",  # 海报
}
_CODE_TO_CHANNEL = {code: name for name, code in CHANNEL_CODES.items()}

_FIELD_RULES: dict[str, re.Pattern[str]] = {
    "channel": re.compile(r"[a-z]|[a-z][a-z0-9_]{1,11}"),
    "dealer": re.compile(r"[A-Za-z0-9]{1,16}"),
    "advisor": re.compile(r"[A-Za-z0-9_.@-]{1,64}"),
    "referrer": re.compile(r"[A-Za-z0-9_-]{1,32}"),
    "campaign": re.compile(r"[A-Za-z0-9_-]{1,32}"),
}
_FIELD_ORDER = ("channel", "dealer", "advisor", "referrer", "campaign")


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What a ``state`` says about where a contact came from. Empty strings mean "not given"."""

    raw: str = ""
    channel: str = ""
    dealer: str = ""
    advisor: str = ""
    referrer: str = ""
    campaign: str = ""
    ours: bool = False  # True when ``raw`` follows our grammar

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode_channel(channel: str) -> str:
    return CHANNEL_CODES.get(channel, channel)


def _decode_channel(token: str) -> str:
    return _CODE_TO_CHANNEL.get(token, token)


def build_state(
    *,
    dealer: str = "",
    channel: str = "",
    advisor: str = "",
    referrer: str = "",
    campaign: str = "",
) -> str:
    """Encode attribution into a ``state`` of at most 30 characters.

    Raises :class:`~scrm.errors.StateGrammarError` naming the field and the reason when a value breaks its
    rule or when the whole state does not fit.
    """
    values = {
        "channel": _encode_channel(channel),
        "dealer": dealer,
        "advisor": advisor,
        "referrer": referrer,
        "campaign": campaign,
    }
    if len(channel) == 1:
        raise StateGrammarError(f"channel {channel!r}: give the channel name (e.g. 'qr'), not a one-letter code")
    for name in _FIELD_ORDER:
        value = values[name]
        if value and not _FIELD_RULES[name].fullmatch(value):
            raise StateGrammarError(f"{name} {value!r} does not match {_FIELD_RULES[name].pattern}")
    if not any(values.values()):
        raise StateGrammarError("state must carry at least one field")
    fields = [values[name] for name in _FIELD_ORDER]
    while fields and not fields[-1]:
        fields.pop()
    state = SEPARATOR.join([PREFIX, *fields])
    if len(state) > STATE_MAX_LEN:
        longest = max(_FIELD_ORDER, key=lambda n: len(values[n]))
        raise StateGrammarError(
            f"state {state!r} is {len(state)} characters, over the WeCom limit of {STATE_MAX_LEN} "
            f"by {len(state) - STATE_MAX_LEN}; shorten {longest} ({len(values[longest])} characters)"
        )
    return state


def parse_state(state: str) -> ChannelInfo:
    """Decode a ``state``; never raises. Foreign states parse to empty fields with ``raw`` kept."""
    raw = state if isinstance(state, str) else ""
    parts = raw.strip().split(SEPARATOR)
    if len(parts) < 2 or parts[0] != PREFIX:
        return ChannelInfo(raw=raw)
    found: dict[str, str] = {}
    for name, token in zip(_FIELD_ORDER, parts[1:], strict=False):
        if token and _FIELD_RULES[name].fullmatch(token):
            found[name] = token
    if "channel" in found:
        found["channel"] = _decode_channel(found["channel"])
    return ChannelInfo(raw=raw, ours=True, **found)
