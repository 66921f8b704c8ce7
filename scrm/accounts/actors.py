"""Who acts: an existing, active user holding the needed permission — never a name typed in.

The CLI runs on the server, so ``--as USERNAME`` is trusted to act as an existing user, but not as a name
that is no user, nor as a disabled one, nor beyond that user's role. The web takes the user from the session.
"""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.accounts.permissions import ROLE_NAMES_ZH, Permission, allows
from scrm.errors import DomainError
from scrm.models.accounts import User, UserRole


class ActorRefused(DomainError):
    """The acting user does not exist, is disabled, or lacks the permission (message in Chinese)."""

    def __init__(self, reason: str, message_zh: str) -> None:
        super().__init__(message_zh)
        self.reason = reason  # machine-readable: unknown_user, inactive_user, forbidden
        self.message_zh = message_zh


async def find_user(session: AsyncSession, username: str) -> User | None:
    return (await session.exec(select(User).where(User.username == username))).first()


async def require_actor(session: AsyncSession, username: str, permission: Permission) -> User:
    """The active user ``username`` if their role allows ``permission``; :class:`ActorRefused` otherwise."""
    user = await find_user(session, username)
    if user is None:
        raise ActorRefused("unknown_user", f"没有用户 {username}（先用 lianyi user add 创建）")
    if not user.active:
        raise ActorRefused("inactive_user", f"用户 {username} 已停用")
    if not allows(user.role, permission):
        role = ROLE_NAMES_ZH.get(UserRole(user.role), user.role) if user.role in set(UserRole) else user.role
        raise ActorRefused("forbidden", f"用户 {username}（{role}）无权执行此操作（{permission.value}）")
    return user
