"""``lianyi session revoke-all --as ADMIN`` ends every console session, in the database or in Redis, audited under
the admin; anyone else is refused and nothing ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from sqlmodel import select

from bot.cli import cli
from bot.redis_keys import RedisKeys
from bot.web.session_redis import RedisSessionStore
from scrm.accounts.sessions import SessionStore, SqlSessionStore
from scrm.db import SessionFactory
from scrm.models import AuditLog, UserRole
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.web_support import add_user


@pytest.mark.parametrize("backend", ["sql", "redis"])
async def test_revoke_all_ends_every_session(
    backend: str,
    database_url: str,
    session_factory: SessionFactory,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "CORP_ID": TEST_CORP_ID,
        "CALLBACK_TOKEN": TEST_TOKEN,
        "CALLBACK_AES_KEY": TEST_AES_KEY,
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url if backend == "redis" else "",
        "REDIS_PREFIX": redis_prefix,
    }.items():
        monkeypatch.setenv("LIANYI_" + name, value)
    root = await add_user(session_factory, "root", UserRole.ADMIN.value, password=None)
    ops = await add_user(session_factory, "ops", UserRole.OPERATOR.value, password=None)
    client = aioredis.from_url(redis_url)
    store: SessionStore = (
        RedisSessionStore(client, RedisKeys(redis_prefix)) if backend == "redis" else SqlSessionStore(session_factory)
    )
    now = datetime.now(UTC)
    try:
        ids = [
            (await store.create(user, now=now, lifetime=timedelta(hours=1), user_agent="", client_digest=""))[0]
            for user in (root, ops, ops)
        ]
        refused = await asyncio.to_thread(CliRunner().invoke, cli, ["session", "revoke-all", "--as", "ops"])
        assert (refused.exit_code, refused.stderr.strip()) == (1, "用户 ops（运营）无权执行此操作（user.admin）")
        assert all([await store.get(i, now) is not None for i in ids])
        done = await asyncio.to_thread(CliRunner().invoke, cli, ["session", "revoke-all", "--as", "root"])
        assert (done.exit_code, done.stdout) == (0, "已结束 3 个后台登录会话\n"), done.output
        assert [await store.get(i, now) for i in ids] == [None, None, None]
    finally:
        await client.aclose()
    async with session_factory() as session:
        audit = (await session.exec(select(AuditLog).where(AuditLog.action == "sessions.revoked_all"))).one()
    assert (audit.actor, audit.detail) == ("root", {"revoked": 3})
