"""Staff members (成员) as full sync sees them: get_follow_user_list and user/get.

Only members in the follow-user list may have customers (客户联系 permission); members missing from it
lose the flag but keep their row (their contacts and history stay attributed to them).

A member's dealer comes from a custom member attribute (WeCom 通讯录 → 自定义字段, ``extattr`` in user/get)
named ``经销商代码`` (or ``dealer_code``); an unknown code creates the dealer row with an empty name, which
the brand's dealer import fills in. Members without the attribute keep whatever dealer they had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.models import Dealer, Staff
from scrm.models.tenancy import ROSTER_UNMATCHED
from scrm.rows import assign, ensure_corp, get_or_create

# user/get ``status``: 1 active, 2 disabled, 4 not yet activated, 5 left the company
_ACTIVE_STATUSES = {1, 4}
DEALER_ATTR_NAMES = ("经销商代码", "dealer_code")


async def upsert_staff(session: AsyncSession, corp_id: str, userid: str, **values: Any) -> Staff:
    """The staff row for ``userid``, created when missing, with ``values`` applied (only when different)."""
    await ensure_corp(session, corp_id)
    row, created = await get_or_create(session, Staff, {"corp_id": corp_id, "userid": userid}, values)
    if not created:
        assign(row, values)
        if (row.extra or {}).get(ROSTER_UNMATCHED):  # WeCom knows the member now: the roster row is matched
            row.extra = {k: v for k, v in (row.extra or {}).items() if k != ROSTER_UNMATCHED}
    return row


async def apply_follow_user_list(session: AsyncSession, corp_id: str, userids: Iterable[str]) -> None:
    """Mirror get_follow_user_list: listed members have contact permission, everyone else loses it."""
    listed = {u for u in userids if u}
    for userid in sorted(listed):
        await upsert_staff(session, corp_id, userid, has_contact_permission=True)
    rows = await session.exec(
        select(Staff).where(Staff.corp_id == corp_id, col(Staff.has_contact_permission).is_(True))
    )
    for row in rows.all():
        if row.userid not in listed:
            assign(row, {"has_contact_permission": False})


async def apply_user(session: AsyncSession, corp_id: str, user: Mapping[str, Any]) -> Staff | None:
    """Apply one user/get response (name and whether the member is still active)."""
    userid = str(user.get("userid") or "")
    if not userid:
        return None
    values: dict[str, Any] = {"name": str(user.get("name") or "")}
    status = user.get("status")
    if isinstance(status, int):
        values["active"] = status in _ACTIVE_STATUSES
    code = dealer_code_of(user)
    if code:
        await ensure_corp(session, corp_id)
        dealer, _ = await get_or_create(session, Dealer, {"corp_id": corp_id, "code": code})
        values["dealer_id"] = dealer.id
    return await upsert_staff(session, corp_id, userid, **values)


def dealer_code_of(user: Mapping[str, Any]) -> str:
    """The dealer code in user/get's ``extattr`` (text attribute named 经销商代码 / dealer_code), or ""."""
    extattr = user.get("extattr")
    attrs = extattr.get("attrs") if isinstance(extattr, Mapping) else None
    for attr in attrs or []:
        if not isinstance(attr, Mapping) or attr.get("name") not in DEALER_ATTR_NAMES:
            continue
        text = attr.get("text") if isinstance(attr.get("text"), Mapping) else {}
        value = str(attr.get("value") or (text or {}).get("value") or "").strip()
        if value:
            return value
    return ""


async def upsert_dealer(session: AsyncSession, corp_id: str, code: str, *, name: str = "", city: str = "") -> Dealer:
    """The dealer with ``code``, created when missing; name and city applied when given."""
    await ensure_corp(session, corp_id)
    dealer, _ = await get_or_create(session, Dealer, {"corp_id": corp_id, "code": code})
    values = {k: v for k, v in {"name": name, "city": city}.items() if v}
    assign(dealer, values, touch=None)
    return dealer
