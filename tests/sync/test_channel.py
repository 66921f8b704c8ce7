"""The contact-way ``state`` grammar: round trips, the 30-character bound, foreign and damaged states."""

from __future__ import annotations

import random
import string

import pytest

from scrm.channel import CHANNEL_CODES, STATE_MAX_LEN, ChannelInfo, build_state, parse_state
from scrm.errors import StateGrammarError

CHANNELS = [*CHANNEL_CODES, "livestream", "dcd_app", "autohome", ""]


def _token(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _random_fields(rng: random.Random) -> dict[str, str]:
    alnum = string.ascii_letters + string.digits
    return {
        "channel": rng.choice(CHANNELS),
        "dealer": rng.choice(["", _token(rng, alnum, 1, 8)]),
        "advisor": rng.choice(["", _token(rng, alnum + "_.@-", 1, 12)]),
        "referrer": rng.choice(["", _token(rng, alnum + "_-", 1, 6)]),
        "campaign": rng.choice(["", _token(rng, alnum + "_-", 1, 8)]),
    }


def test_round_trip_and_length_bound_over_random_fields() -> None:
    rng = random.Random(20240501)
    built = refused = 0
    for _ in range(3000):
        fields = _random_fields(rng)
        if not any(fields.values()):
            continue
        try:
            state = build_state(**fields)
        except StateGrammarError as exc:
            refused += 1
            assert "over the WeCom limit" in str(exc)
            continue
        built += 1
        assert len(state) <= STATE_MAX_LEN
        info = parse_state(state)
        assert info.ours
        assert info.raw == state
        assert (info.channel, info.dealer, info.advisor, info.referrer, info.campaign) == (
            fields["channel"],
            fields["dealer"],
            fields["advisor"],
            fields["referrer"],
            fields["campaign"],
        )
    assert built > 1000 and refused > 10  # both branches really exercised


def test_known_channels_use_one_letter_codes() -> None:
    assert build_state(channel="qr", dealer="BJ001", advisor="zhangsan") == "L1~q~BJ001~zhangsan"
    assert build_state(channel="ad", campaign="spring24") == "L1~a~~~~spring24"
    assert parse_state("L1~r~SH002~lisi~K7Q2") == ChannelInfo(
        raw="L1~r~SH002~lisi~K7Q2", channel="referral", dealer="SH002", advisor="lisi", referrer="K7Q2", ours=True
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"channel": "qr", "advisor": "a" * 30}, "over the WeCom limit of 30"),
        ({"channel": "qr", "dealer": "BJ-001"}, "dealer 'BJ-001' does not match"),
        ({"channel": "q"}, "give the channel name"),
        ({"channel": "Qr!"}, "channel 'Qr!' does not match"),
        ({"advisor": "zhang~san"}, "advisor 'zhang~san' does not match"),
        ({}, "at least one field"),
    ],
)
def test_build_state_refuses_with_reason(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(StateGrammarError, match=reason):
        build_state(**fields)


@pytest.mark.parametrize(
    "state",
    ["", "summer_campaign", "L1", "L2~q~BJ001", "l1~q~BJ001", "qr~BJ001~zhangsan", "渠道-抖音", " " * 5, "~~~"],
)
def test_foreign_states_keep_raw_and_parse_to_empty_fields(state: str) -> None:
    info = parse_state(state)
    assert info == ChannelInfo(raw=state)
    assert not info.ours


def test_damaged_fields_are_dropped_one_by_one() -> None:
    info = parse_state("L1~q~BJ-001~zhangsan~K7$Q~spring24~extra~more")
    assert (info.channel, info.dealer, info.advisor, info.referrer, info.campaign) == (
        "qr",
        "",
        "zhangsan",
        "",
        "spring24",
    )
    assert info.ours


def test_parse_never_raises_on_random_garbage() -> None:
    rng = random.Random(7)
    alphabet = string.printable + "~~~~L1渠道"
    for _ in range(2000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            raw = "L1~" + raw
        info = parse_state(raw)
        assert info.raw == raw
        assert "~" not in info.channel + info.dealer + info.advisor + info.referrer + info.campaign
