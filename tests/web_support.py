"""Helpers for tests of the web's authentication: users, sessions, staff tokens and the WebAuth they go through."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bot.settings import Settings
from bot.web.auth import WebAuth, issue_staff_token
from scrm.accounts.passwords import hash_password
from scrm.accounts.sessions import SessionStore, SqlSessionStore
from scrm.db import SessionFactory, write_transaction
from scrm.leads.staff_tokens import IssuedToken
from scrm.models import User

PASSWORD = "correct horse battery"


def web_auth(
    settings: Settings, factory: SessionFactory, now: Callable[[], datetime], sessions: SessionStore | None = None
) -> WebAuth:
    return WebAuth(settings, factory, sessions or SqlSessionStore(factory), now)


async def mint(
    settings: Settings,
    factory: SessionFactory,
    userid: str,
    *,
    now: datetime,
    lifetime: timedelta = timedelta(days=30),
) -> IssuedToken:
    """A staff token as ``lianyi staff token`` makes it (its row committed)."""
    async with write_transaction(factory) as session:
        return await issue_staff_token(settings, session, userid, lifetime=lifetime, created_by="test", now=now)


async def add_user(
    factory: SessionFactory,
    username: str,
    role: str,
    *,
    password: str | None = PASSWORD,
    dealer_code: str = "",
    staff_userid: str | None = None,
    active: bool = True,
    display_name: str = "",
) -> int:
    user = User(
        username=username,
        display_name=display_name or f"{username} 的名字",
        role=role,
        dealer_code=dealer_code,
        staff_userid=staff_userid,
        password_hash=hash_password(password) if password else "",
        active=active,
    )
    async with write_transaction(factory) as session:
        session.add(user)
        await session.flush()
        assert user.id is not None
        return user.id
