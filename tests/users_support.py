"""Users for tests: rows inserted directly (the way an admin's ``lianyi user add`` would leave them)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import select

from scrm.accounts.passwords import hash_password
from scrm.db import SessionFactory, transaction
from scrm.models.accounts import User, UserRole


@dataclass(frozen=True)
class Account:
    username: str
    role: UserRole
    dealer_code: str = ""
    staff_userid: str | None = None
    active: bool = True
    password: str = ""


# the people of the campaign and roster tests: two operators, a manager, an advisor, a disabled operator, an admin
STAFF_ACCOUNTS = (
    Account("operator1", UserRole.OPERATOR),
    Account("operator2", UserRole.OPERATOR),
    Account("manager1", UserRole.MANAGER, dealer_code="D000"),
    Account("advisor1", UserRole.ADVISOR, dealer_code="D000"),
    Account("operator_gone", UserRole.OPERATOR, active=False),
    Account("admin1", UserRole.ADMIN),
)


async def add_accounts(sessions: SessionFactory, accounts: tuple[Account, ...] = STAFF_ACCOUNTS) -> None:
    """Insert ``accounts``, except usernames that exist already."""
    async with transaction(sessions) as session:
        existing = set((await session.exec(select(User.username))).all())
        for account in accounts:
            if account.username in existing:
                continue
            session.add(
                User(
                    username=account.username,
                    role=account.role.value,
                    dealer_code=account.dealer_code,
                    staff_userid=account.staff_userid,
                    active=account.active,
                    password_hash=hash_password(account.password) if account.password else "",
                )
            )
