"""People who sign in to Lianyi (the console, the CLI's ``--as``) and what they may do."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from scrm.models._base import ts_field


class UserRole(StrEnum):
    """Who a user is to Lianyi. ``scrm.accounts.permissions`` says what each may do."""

    ADMIN = "admin"  # IT: users, secrets, privacy requests, the audit log
    OPERATOR = "operator"  # community operations: campaigns, SOP templates, every dealer's leads
    MANAGER = "manager"  # a dealer's sales manager: that dealer's leads and reports
    ADVISOR = "advisor"  # a dealer's sales advisor: own leads (signs in through WeCom, not a password)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    display_name: str = Field(default="", max_length=128)
    role: str = Field(max_length=16)
    # the dealer a manager or advisor belongs to (dealers.code); empty for admins and operators
    dealer_code: str = Field(default="", max_length=16)
    # the WeCom userid of a staff member (advisors, managers); unique when set
    staff_userid: str | None = Field(default=None, max_length=64, unique=True)
    password_hash: str = Field(default="", max_length=256)  # argon2id; empty = cannot sign in with a password
    active: bool = Field(default=True)
    created_at: datetime = ts_field(default_now=True)
    last_login_at: datetime | None = ts_field()


class ApiToken(SQLModel, table=True):
    """A staff bearer token of the lead API: the token itself is never stored, only its id (revocable)."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=32)  # the token id printed by `lianyi staff token`
    corp_id: str = Field(max_length=64)
    staff_userid: str = Field(max_length=64, index=True)
    created_by: str = Field(max_length=64)  # the username that issued it
    created_at: datetime = ts_field(default_now=True)
    expires_at: datetime = ts_field(nullable=False)
    revoked_at: datetime | None = ts_field()


class UserSession(SQLModel, table=True):
    """A console session: only a digest of the session id is stored, so a leaked table signs nobody in."""

    __tablename__ = "user_sessions"

    id_digest: str = Field(primary_key=True, max_length=64)  # sha256 hex of the session id
    user_id: int = Field(foreign_key="users.id", index=True)
    created_at: datetime = ts_field(default_now=True)
    expires_at: datetime = ts_field(nullable=False)
    last_seen_at: datetime = ts_field(default_now=True)
    revoked_at: datetime | None = ts_field()
    client_digest: str = Field(default="", max_length=64)  # digest of user agent and address (never the values)
    user_agent: str = Field(default="", max_length=128)  # shown on the console home, truncated


class LoginFailure(SQLModel, table=True):
    """A failed console sign-in, counted per username and per client address (by digest) for throttling."""

    __tablename__ = "login_failures"

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=8)  # "user" or "address"
    key_digest: str = Field(max_length=64, index=True)
    at: datetime = ts_field(default_now=True, index=True)
