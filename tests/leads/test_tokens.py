"""Staff tokens: signed ``userid.expiry.signature``, refused when forged, expired, for another corp or malformed;
``lianyi staff token`` issues one only for an active staff member."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.web.leads_api import staff_token_secret
from bot.web.links import link_secret
from scrm.db import SessionFactory
from scrm.leads.staff_tokens import derive_secret, issue, verify
from tests.conftest import TEST_AES_KEY, TEST_TOKEN, make_settings
from tests.leads.action_support import CORP, cli_env, seed_network  # noqa: F401

SECRET = derive_secret(b"process secret")
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=30)


def test_a_token_names_its_staff_member_until_it_expires() -> None:
    token = issue(SECRET, CORP, "li.si@dealer", EXPIRES)
    userid, expiry, signature = token.rsplit(".", 2)
    assert (userid, int(expiry)) == ("li.si@dealer", int(EXPIRES.timestamp()))
    assert len(signature) == 43  # 32 bytes, base64url without padding
    assert verify(SECRET, CORP, token, NOW) == "li.si@dealer"
    assert verify(SECRET, CORP, token, EXPIRES - timedelta(seconds=1)) == "li.si@dealer"
    assert verify(SECRET, CORP, token, EXPIRES) is None


def test_forged_and_foreign_tokens_are_refused() -> None:
    token = issue(SECRET, CORP, "a1", EXPIRES)
    userid, expiry, signature = token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    later = str(int(expiry) + 86400)
    assert verify(SECRET, CORP, f"{userid}.{expiry}.{flipped}", NOW) is None
    assert verify(SECRET, CORP, f"m1.{expiry}.{signature}", NOW) is None  # another user's name on a1's signature
    assert verify(SECRET, CORP, f"{userid}.{later}.{signature}", NOW) is None  # a longer life
    assert verify(SECRET, "wwothercorp", token, NOW) is None
    assert verify(derive_secret(b"another secret"), CORP, token, NOW) is None


@pytest.mark.parametrize(
    "token",
    ["", "a1", "a1.123", ".123.sig", "a1.12x.sig", "a1.-5.sig", "a1.１２３.sig", "a1.123.签名", "a" * 600],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert verify(SECRET, CORP, token, NOW) is None


def test_issue_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue(SECRET, CORP, "a1", EXPIRES.replace(tzinfo=None))
    for userid in ("", "a b", "x" * 65):
        with pytest.raises(ValueError, match="invalid userid"):
            issue(SECRET, CORP, userid, EXPIRES)


def test_the_key_is_derived_with_its_own_label() -> None:
    settings = make_settings(corp_id=CORP, callback_token=TEST_TOKEN, callback_aes_key=TEST_AES_KEY)
    key = staff_token_secret(settings)
    assert key == derive_secret(link_secret(settings)) != link_secret(settings)
    assert derive_secret(b"x") != derive_secret(b"y")
    assert len(key) == 32


@pytest.mark.usefixtures("cli_env")
async def test_the_cli_issues_tokens_to_active_staff_only(session_factory: SessionFactory) -> None:
    await seed_network(session_factory)
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["staff", "token", "m1", "--days", "7"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    settings = make_settings(corp_id=CORP)
    now = datetime.now(UTC)
    assert verify(staff_token_secret(settings), CORP, token, now) == "m1"
    assert verify(staff_token_secret(settings), CORP, token, now + timedelta(days=7, minutes=1)) is None
    assert "有效期至" in result.stderr
    for userid in ("gone", "nobody"):
        refused = await asyncio.to_thread(CliRunner().invoke, cli, ["staff", "token", userid])
        assert refused.exit_code == 1
        assert refused.stdout == ""
        assert refused.stderr.strip() == f"成员 {userid} 不存在或已停用，请先导入花名册（lianyi roster import）"
