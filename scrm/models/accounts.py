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
