"""Staff tokens: ``lt1.<id>.<expiry>.<signature>`` with a row per token; refused when forged, expired, longer than
30 days, for another corp, malformed, unknown or revoked; ``lianyi staff token`` issues one only as an active admin
(``--as``) to an active staff member, and ``lianyi staff revoke`` ends one or all of a member's, both audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlmodel import col, select

from bot.cli import cli
from bot.settings import key_ring
from scrm.db import SessionFactory, write_transaction
from scrm.keys import KeyPurpose
from scrm.leads.staff_tokens import (
    MAX_LIFETIME,
    TokenRefused,
    _signature,
    issue_token,
    read_token,
    revoke_staff_tokens,
    revoke_token,
    verify_token,
)
from scrm.models import ApiToken, AuditLog, UserRole
from tests.conftest import make_settings
from tests.leads.action_support import CORP, cli_env, seed_network  # noqa: F401
from tests.web_support import add_user

SETTINGS = make_settings(corp_id=CORP)
KEY = key_ring(SETTINGS).key(KeyPurpose.STAFF_TOKENS)
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


async def _issue(factory: SessionFactory, userid: str = "a1", lifetime: timedelta = MAX_LIFETIME) -> str:
    async with write_transaction(factory) as session:
        issued = await issue_token(session, KEY, CORP, userid, lifetime=lifetime, created_by="admin", now=NOW)
    return issued.token


def test_a_token_carries_its_id_and_expiry_until_it_expires() -> None:
    expiry = int((NOW + timedelta(days=7)).timestamp())
    token = f"lt1.abc123.{expiry}.{_signature(KEY, CORP, 'abc123', expiry)}"
    assert read_token([KEY], CORP, token, NOW) == ("abc123", expiry)
    assert read_token([KEY], CORP, token, NOW + timedelta(days=7) - timedelta(seconds=1)) == ("abc123", expiry)
    assert read_token([KEY], CORP, token, NOW + timedelta(days=7)) is None
    assert read_token([KEY], "wwothercorp", token, NOW) is None
    other = key_ring(make_settings(secret_key="x" * 20 + "abcdefghijklmnopqrstuvwxyz")).key(KeyPurpose.STAFF_TOKENS)
    assert read_token([other], CORP, token, NOW) is None
    assert read_token([other, KEY], CORP, token, NOW) == ("abc123", expiry)  # a rotation: the previous key verifies
    longer = f"lt1.abc123.{expiry + 86400}.{token.rsplit('.', 1)[1]}"
    assert read_token([KEY], CORP, longer, NOW) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a1",
        "lt1.x.123",
        "lt1..123.sig",
        "lt1.x.12x.sig",
        "lt1.x.-5.sig",
        "lt1.x.１２３.sig",
        "lt1.x.1.签名",
        "a" * 600,
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert read_token([KEY], CORP, token, NOW) is None


async def test_lifetimes_beyond_30_days_are_refused_when_issued(session_factory: SessionFactory) -> None:
    for lifetime in (MAX_LIFETIME + timedelta(seconds=1), timedelta(days=3650), timedelta(0), timedelta(days=-1)):
        with pytest.raises(TokenRefused, match="令牌有效期须在 1 秒到 30 天之间"):
            await _issue(session_factory, lifetime=lifetime)
    async with session_factory() as session:
        assert (await session.exec(select(ApiToken))).all() == []


async def test_rows_make_tokens_revocable_one_by_one_or_all_of_a_member(session_factory: SessionFactory) -> None:
    first, second, other = (
        (await _issue(session_factory)),
        (await _issue(session_factory)),
        await _issue(session_factory, "m1"),
    )
    async with session_factory() as session:
        for token in (first, second, other):
            assert await verify_token(session, [KEY], CORP, token, NOW) is not None
    first_id = first.split(".")[1]
    async with write_transaction(session_factory) as session:
        row = await revoke_token(session, first_id, NOW)
        assert row is not None and row.staff_userid == "a1"
        assert await revoke_token(session, "no-such-id", NOW) is None
    async with session_factory() as session:
        assert await verify_token(session, [KEY], CORP, first, NOW) is None
        assert await verify_token(session, [KEY], CORP, second, NOW) is not None
    async with write_transaction(session_factory) as session:
        assert await revoke_staff_tokens(session, CORP, "a1", NOW) == 1  # the first was revoked already
    async with session_factory() as session:
        assert await verify_token(session, [KEY], CORP, second, NOW) is None
        assert await verify_token(session, [KEY], CORP, other, NOW) is not None
    # a token whose row is gone (or was never written) is refused although its signature is ours
    async with write_transaction(session_factory) as session:
        row = await session.get(ApiToken, other.split(".")[1])
        assert row is not None
        await session.delete(row)
    async with session_factory() as session:
        assert await verify_token(session, [KEY], CORP, other, NOW) is None


async def _cli(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.usefixtures("cli_env")
async def test_the_cli_issues_tokens_as_an_admin_to_active_staff_only(session_factory: SessionFactory) -> None:
    await seed_network(session_factory)
    await add_user(session_factory, "root", UserRole.ADMIN.value, password=None)
    await add_user(session_factory, "ops", UserRole.OPERATOR.value, password=None)
    await add_user(session_factory, "former", UserRole.ADMIN.value, password=None, active=False)
    code, out, err = await _cli("staff", "token", "m1", "--days", "7", "--as", "root")
    assert code == 0, err
    token = out.strip()
    now = datetime.now(UTC)
    async with session_factory() as session:
        row = await verify_token(session, [KEY], CORP, token, now)
        assert row is not None and (row.staff_userid, row.created_by) == ("m1", "root")
        assert await verify_token(session, [KEY], CORP, token, now + timedelta(days=7, minutes=1)) is None
        audit = (await session.exec(select(AuditLog).where(AuditLog.action == "staff_token.issued"))).one()
    assert (audit.actor, audit.subject_id, audit.detail["token_id"]) == ("root", "m1", row.id)
    assert f"令牌编号 {row.id}" in err and "有效期至" in err
    refusals = {
        ("gone", "root"): "成员 gone 不存在或已停用，请先导入花名册（lianyi roster import）",
        ("nobody", "root"): "成员 nobody 不存在或已停用，请先导入花名册（lianyi roster import）",
        ("m1", "ops"): "用户 ops（运营）无权执行此操作（user.admin）",
        ("m1", "former"): "用户 former 已停用",
        ("m1", "ghost"): "没有用户 ghost（先用 lianyi user add 创建）",
    }
    for (userid, actor), message in refusals.items():
        code, out, err = await _cli("staff", "token", userid, "--as", actor)
        assert (code, out, err.strip()) == (1, "", message)
    code, _, err = await _cli("staff", "token", "m1", "--as", "root", "--days", "3650")
    assert code == 2 and "3650 is not in the range 1<=x<=30" in err
    code, _, err = await _cli("staff", "token", "m1")
    assert code == 2 and "Missing option '--as'" in err
    async with session_factory() as session:
        assert len((await session.exec(select(ApiToken))).all()) == 1


@pytest.mark.usefixtures("cli_env")
async def test_the_cli_revokes_a_token_or_all_of_a_member(session_factory: SessionFactory) -> None:
    await seed_network(session_factory)
    await add_user(session_factory, "root", UserRole.ADMIN.value, password=None)
    await add_user(session_factory, "mgr", UserRole.MANAGER.value, password=None)
    tokens = [(await _cli("staff", "token", userid, "--as", "root"))[1].strip() for userid in ("a1", "a1", "m1")]
    ids = [t.split(".")[1] for t in tokens]
    assert await _cli("staff", "revoke", ids[0], "--as", "mgr") == (
        1,
        "",
        "用户 mgr（经销商经理）无权执行此操作（user.admin）\n",
    )
    assert await _cli("staff", "revoke", ids[0], "--as", "root") == (0, f"已吊销令牌 {ids[0]}（成员 a1）\n", "")
    assert await _cli("staff", "revoke", "nope", "--as", "root") == (1, "", "没有编号为 nope 的令牌\n")
    assert await _cli("staff", "revoke", "--user", "a1", "--as", "root") == (0, "已吊销成员 a1 的 1 个令牌\n", "")
    assert (await _cli("staff", "revoke", "--as", "root"))[0] == 1
    now = datetime.now(UTC)
    async with session_factory() as session:
        live = [await verify_token(session, [KEY], CORP, t, now) is not None for t in tokens]
        actions = (
            await session.exec(
                select(AuditLog.action, AuditLog.actor, AuditLog.subject_id)
                .where(col(AuditLog.action).startswith("staff_token.revoked"))
                .order_by(col(AuditLog.id))
            )
        ).all()
    assert live == [False, False, True]
    assert [tuple(a) for a in actions] == [
        ("staff_token.revoked", "root", "a1"),
        ("staff_token.revoked_all", "root", "a1"),
    ]
