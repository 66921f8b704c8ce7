"""Administering users: create, disable / enable, set a password. Each change writes an audit row.

Every change is made by an active admin (``actor``, resolved with :func:`require_actor`), with one exception,
the bootstrap: while no active admin exists, the first admin may be created without an actor (the row then
names the new admin as its own creator).

Advisors never get a password: they sign in through WeCom (OAuth), so an advisor must be linked to a staff
member (``staff_userid``) and :func:`set_password` refuses them. Admins, operators and managers need one.
Accounts are not per corp, so their audit rows have an empty ``corp_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.accounts.actors import find_user, require_actor
from scrm.accounts.passwords import hash_password
from scrm.accounts.permissions import ROLE_NAMES_ZH, Permission
from scrm.errors import DomainError
from scrm.models import Dealer, Staff
from scrm.models.accounts import User, UserRole

USERNAME = re.compile(r"[a-z0-9_.-]{2,64}")
DEALER_ROLES = frozenset({UserRole.MANAGER, UserRole.ADVISOR})
ACCOUNTS_CORP = ""  # users belong to no corp


class UserAdminError(DomainError):
    """A user change that cannot be made; the message is Chinese, for the administrator."""


@dataclass(frozen=True, slots=True)
class NewUser:
    username: str
    role: str
    dealer_code: str = ""
    staff_userid: str = ""
    display_name: str = ""
    password: str | None = None  # None for advisors


def user_fields(user: User) -> dict[str, Any]:
    """The row as the audit digests it (every column, the password hash included: only its digest is kept)."""
    return user.model_dump()


def needs_password(role: str) -> bool:
    return role != UserRole.ADVISOR.value


async def active_admin_exists(session: AsyncSession) -> bool:
    query = select(User.id).where(User.role == UserRole.ADMIN.value, col(User.active).is_(True)).limit(1)
    return (await session.exec(query)).first() is not None


async def _acting_admin(session: AsyncSession, actor: str | None, new: NewUser | None = None) -> str:
    """The username to audit: ``actor`` when an active admin, or (bootstrap) the first admin being created."""
    if actor is not None:
        return (await require_actor(session, actor, Permission.USER_ADMIN)).username
    if new is not None and new.role == UserRole.ADMIN.value and not await active_admin_exists(session):
        return new.username
    raise UserAdminError("需要用 --as 指定一位有效的管理员（只有在还没有有效管理员时，才能不带 --as 创建第一个管理员）")


async def _check_scope(session: AsyncSession, new: NewUser) -> None:
    """Dealer for managers and advisors only, and it must exist; a staff member must exist and be unlinked."""
    if UserRole(new.role) in DEALER_ROLES:
        if not new.dealer_code:
            raise UserAdminError(f"{ROLE_NAMES_ZH[UserRole(new.role)]}需要用 --dealer 指定所属门店代码")
        found = (await session.exec(select(Dealer.id).where(Dealer.code == new.dealer_code).limit(1))).first()
        if found is None:
            raise UserAdminError(f"门店代码 {new.dealer_code} 不存在（先用 lianyi roster import 导入门店）")
    elif new.dealer_code:
        raise UserAdminError(f"{ROLE_NAMES_ZH[UserRole(new.role)]}不属于某个门店，不能指定 --dealer")
    if new.role == UserRole.ADVISOR.value and not new.staff_userid:
        raise UserAdminError("销售顾问通过企业微信登录，需要用 --staff 指定其企业微信账号")
    if not new.staff_userid:
        return
    staff = (await session.exec(select(Staff.id).where(Staff.userid == new.staff_userid).limit(1))).first()
    if staff is None:
        raise UserAdminError(f"成员 {new.staff_userid} 不存在（先运行 lianyi sync 或 lianyi roster import）")
    linked = (await session.exec(select(User.username).where(User.staff_userid == new.staff_userid))).first()
    if linked is not None:
        raise UserAdminError(f"成员 {new.staff_userid} 已关联用户 {linked}")


def check_new_user(new: NewUser) -> None:
    """What needs no database: username shape, role, password present exactly when the role needs one."""
    if not USERNAME.fullmatch(new.username):
        raise UserAdminError("用户名只能由 2–64 个小写字母、数字、下划线、点或连字符组成")
    if new.role not in set(UserRole):
        raise UserAdminError(f"未知角色 {new.role}（可选 admin、operator、manager、advisor）")
    if len(new.display_name) > 128:
        raise UserAdminError("显示名不能超过 128 个字符")
    if needs_password(new.role) and new.password is None:
        raise UserAdminError("需要设置密码")
    if not needs_password(new.role) and new.password is not None:
        raise UserAdminError("销售顾问通过企业微信登录，不设置密码")


async def create_user(session: AsyncSession, new: NewUser, *, actor: str | None, now: datetime) -> User:
    """Add ``new`` (see the module doc for who may); raises :class:`UserAdminError` / ``ActorRefused``."""
    check_new_user(new)
    acting = await _acting_admin(session, actor, new)
    if await find_user(session, new.username) is not None:
        raise UserAdminError(f"用户 {new.username} 已存在")
    await _check_scope(session, new)
    user = User(
        username=new.username,
        display_name=new.display_name,
        role=new.role,
        dealer_code=new.dealer_code,
        staff_userid=new.staff_userid or None,
        password_hash=hash_password(new.password) if new.password is not None else "",
        active=True,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    detail = {"role": new.role, "dealer_code": new.dealer_code, "staff_userid": new.staff_userid}
    await audit.record_change(
        session,
        ACCOUNTS_CORP,
        "user.created",
        "user",
        new.username,
        actor=acting,
        before=None,
        after=user_fields(user),
        detail=detail,
    )
    return user


async def _target(session: AsyncSession, username: str) -> User:
    user = await find_user(session, username)
    if user is None:
        raise UserAdminError(f"没有用户 {username}")
    return user


async def set_active(session: AsyncSession, username: str, active: bool, *, actor: str) -> bool:
    """Enable or disable ``username``; False (and no audit row) when it already was. Nobody disables themselves,
    so the last admin cannot lock everyone out. A disabled user's sessions stop working where they are checked."""
    acting = await _acting_admin(session, actor)
    user = await _target(session, username)
    if not active and user.username == acting:
        raise UserAdminError("不能停用自己")
    if user.active == active:
        return False
    before = user_fields(user)
    user.active = active
    session.add(user)
    await session.flush()
    action = "user.enabled" if active else "user.disabled"
    await audit.record_change(
        session, ACCOUNTS_CORP, action, "user", username, actor=acting, before=before, after=user_fields(user)
    )
    return True


async def set_password(session: AsyncSession, username: str, password: str, *, actor: str) -> None:
    """Replace the password of ``username`` (not an advisor's: they have none)."""
    acting = await _acting_admin(session, actor)
    user = await _target(session, username)
    if not needs_password(user.role):
        raise UserAdminError("销售顾问通过企业微信登录，不设置密码")
    before = user_fields(user)
    user.password_hash = hash_password(password)
    session.add(user)
    await session.flush()
    await audit.record_change(
        session,
        ACCOUNTS_CORP,
        "user.password_changed",
        "user",
        username,
        actor=acting,
        before=before,
        after=user_fields(user),
    )


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.exec(select(User).order_by(col(User.username)))).all())
