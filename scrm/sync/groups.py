"""Customer groups (客户群): the change_external_chat callbacks and groupchat/get results.

Member changes are applied from the callback's ``MemChangeList`` at once; WeCom's ``member_version`` tells
whether our copy is complete. Each add/del callback carries ``LastMemVer`` (the version before the change)
and ``CurMemVer`` (after). When our stored version is not ``LastMemVer``, an earlier callback was lost or is
still on its way, so we schedule a groupchat/get (after a short delay — WeCom updates group data
asynchronously) and still apply this change. An event whose ``CurMemVer`` is already stored, or whose
member changes are all already reflected in our rows (same or later join/leave times), was applied before
(or is older than what we know): it changes nothing, version included.

Per-member ordering: a join older than the member's recorded ``left_at`` and a leave older than the
recorded ``join_time`` are stale and ignored; a leave for a member we never saw leaves a row with
``left_at`` set so the late join it overtook cannot bring the member back. :func:`apply_group_detail` is the
authority: it makes the rows with ``left_at IS NULL`` exactly the members groupchat/get listed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.commands import CommandKind, delay, enqueue
from scrm.db_types import utcnow
from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.models import CustomerGroup, GroupMember, Staff
from scrm.privacy.tombstones import erased_among, erased_before, is_pseudonym
from scrm.rows import assign, ensure_corp, epoch, from_epoch, get_or_create

log = logging.getLogger(__name__)

DISMISSED = "dismissed"
ACTIVE = "active"
MEMBER_STAFF = 1
MEMBER_CUSTOMER = 2
_CUSTOMER_ID_PREFIXES = ("wm", "wo")  # external_userid of WeChat users / WeCom users of other corps


def member_type_of(member_id: str) -> int:
    """Best guess from the id alone (callbacks do not say); groupchat/get later gives the real type."""
    return MEMBER_CUSTOMER if member_id.startswith(_CUSTOMER_ID_PREFIXES) else MEMBER_STAFF


async def _group(session: AsyncSession, corp_id: str, chat_id: str, **defaults: Any) -> CustomerGroup:
    await ensure_corp(session, corp_id)
    row, _ = await get_or_create(session, CustomerGroup, {"corp_id": corp_id, "chat_id": chat_id}, defaults)
    return row


async def _fetch_group(
    session: AsyncSession, corp_id: str, chat_id: str, reason: str, marker: str, refetch_delay: float
) -> None:
    await enqueue(
        session,
        corp_id=corp_id,
        kind=CommandKind.FETCH_GROUP,
        key=f"fetch_group:{chat_id}:{reason}:{marker}",
        payload={"chat_id": chat_id},
        not_before=delay(refetch_delay),
    )


async def on_group_created(
    session: AsyncSession, corp_id: str, *, chat_id: str, event_time: datetime, refetch_delay: float
) -> None:
    """create: remember the group and fetch it once WeCom has settled (``refetch_delay`` seconds)."""
    await _group(session, corp_id, chat_id, wecom_created_at=event_time)
    await _fetch_group(session, corp_id, chat_id, "create", str(epoch(event_time)), refetch_delay)


async def on_group_dismissed(session: AsyncSession, corp_id: str, *, chat_id: str, event_time: datetime) -> None:
    """dismiss: mark the group dismissed; members and history stay."""
    group = await _group(session, corp_id, chat_id)
    if group.status == DISMISSED:
        return
    assign(group, {"status": DISMISSED, "dismissed_at": event_time})
    await audit.record(
        session, corp_id, "group.dismissed", "group", chat_id, {"name": group.name, "at": event_time.isoformat()}
    )


async def on_group_updated(
    session: AsyncSession,
    corp_id: str,
    *,
    chat_id: str,
    update_detail: str,
    event_time: datetime,
    refetch_delay: float,
    members: Sequence[str] = (),
    join_scene: int | None = None,
    quit_scene: int | None = None,
    last_mem_ver: str = "",
    cur_mem_ver: str = "",
    hooks: LifecycleHooks = NO_HOOKS,
) -> None:
    """update: apply a member diff (add_member / del_member) or refetch on name/owner/notice changes."""
    group = await _group(session, corp_id, chat_id)
    if update_detail not in _MEMBER_CHANGES:
        await _fetch_group(session, corp_id, chat_id, update_detail or "update", str(epoch(event_time)), refetch_delay)
        return
    if cur_mem_ver and group.member_version == cur_mem_ver:
        return  # this change is already in our copy (a replay, or a groupchat/get that saw it)
    apply = _MEMBER_CHANGES[update_detail]
    changed = [await apply(session, corp_id, chat_id, m, event_time, join_scene, quit_scene) for m in members]
    if members and not any(changed):
        return  # every member row already reflects this change or a later one: a replay or a stale event
    if group.member_version != last_mem_ver:
        log.info(
            "group member_version mismatch, refetching",
            extra={"chat_id": chat_id, "stored": group.member_version, "last_mem_ver": last_mem_ver},
        )
        await _fetch_group(session, corp_id, chat_id, "version", cur_mem_ver or str(epoch(event_time)), refetch_delay)
    count = await _active_member_count(session, corp_id, chat_id)
    assign(group, {"member_version": cur_mem_ver or group.member_version, "member_count": count})
    if update_detail == "add_member":
        joined = [m for m, was_new in zip(members, changed, strict=True) if was_new]
        if joined:
            await hooks.group_members_joined(session, corp_id, chat_id, joined, event_time, join_scene)


async def _member_joined(
    session: AsyncSession,
    corp_id: str,
    chat_id: str,
    member_id: str,
    event_time: datetime,
    join_scene: int | None,
    _quit_scene: int | None,
) -> bool:
    """True when the join changed our rows (False: already known, or older than a recorded leave, or a customer
    erased after it)."""
    if member_type_of(member_id) == MEMBER_CUSTOMER and await erased_before(session, corp_id, member_id, event_time):
        return False
    values: dict[str, Any] = {
        "member_type": member_type_of(member_id),
        "join_time": event_time,
        "join_scene": join_scene,
        "left_at": None,
        "quit_scene": None,
    }
    keys = {"corp_id": corp_id, "chat_id": chat_id, "member_id": member_id}
    row, created = await get_or_create(session, GroupMember, keys, values)
    if created:
        return True
    if row.left_at is not None and event_time < row.left_at:
        return False  # stale join: the member left after it
    if row.left_at is None and row.join_time is not None and event_time <= row.join_time:
        return False  # already a member since this join or a later one
    return assign(row, {k: v for k, v in values.items() if k != "member_type"})


async def _member_left(
    session: AsyncSession,
    corp_id: str,
    chat_id: str,
    member_id: str,
    event_time: datetime,
    _join_scene: int | None,
    quit_scene: int | None,
) -> bool:
    """True when the leave changed our rows (False: already left, or older than a recorded join, or a customer
    erased after it)."""
    if member_type_of(member_id) == MEMBER_CUSTOMER and await erased_before(session, corp_id, member_id, event_time):
        return False
    values: dict[str, Any] = {"left_at": event_time, "quit_scene": quit_scene}
    keys = {"corp_id": corp_id, "chat_id": chat_id, "member_id": member_id}
    row, created = await get_or_create(session, GroupMember, keys, {"member_type": member_type_of(member_id), **values})
    if created:
        return True
    if row.left_at is not None:
        return False
    if row.join_time is not None and event_time < row.join_time:
        return False  # stale leave: the member (re)joined after it
    return assign(row, values)


_MEMBER_CHANGES = {"add_member": _member_joined, "del_member": _member_left}


async def _active_member_count(session: AsyncSession, corp_id: str, chat_id: str) -> int:
    result = await session.exec(
        select(func.count())
        .select_from(GroupMember)
        .where(
            GroupMember.corp_id == corp_id,
            GroupMember.chat_id == chat_id,
            col(GroupMember.left_at).is_(None),
        )
    )
    return int(result.one())


# ---- groupchat/get ----------------------------------------------------------------------------------


def _invitor(member: Mapping[str, Any]) -> str:
    invitor = member.get("invitor")
    if isinstance(invitor, Mapping):
        return str(invitor.get("userid") or "")
    return str(invitor or "")


async def apply_group_detail(session: AsyncSession, corp_id: str, group_chat: dict[str, Any]) -> None:
    """Mirror one groupchat/get ``group_chat`` exactly: the group's fields and its current members.

    Listed members get a row with ``left_at`` NULL (rejoining clears it); rows still open but not listed
    are closed with ``left_at`` = now (the quit scene is unknown then). The group's dealer is its owner's.
    """
    chat_id = str(group_chat.get("chat_id") or "")
    if not chat_id:
        log.warning("group detail without chat_id ignored", extra={"keys": sorted(group_chat)})
        return
    group = await _group(session, corp_id, chat_id)
    owner = str(group_chat.get("owner") or "")
    dealer_id: int | None = None
    if owner:
        staff = (await session.exec(select(Staff).where(Staff.corp_id == corp_id, Staff.userid == owner))).first()
        dealer_id = staff.dealer_id if staff else None
    members = [m for m in group_chat.get("member_list") or [] if isinstance(m, Mapping) and m.get("userid")]
    changed = await _mirror_members(session, corp_id, chat_id, members)
    changed |= assign(
        group,
        {
            "name": str(group_chat.get("name") or ""),
            "owner_userid": owner,
            "notice": str(group_chat.get("notice") or ""),
            "member_version": str(group_chat.get("member_version") or ""),
            "member_count": len({str(m["userid"]) for m in members}),
            "wecom_created_at": from_epoch(group_chat.get("create_time")) or group.wecom_created_at,
            "dealer_id": dealer_id if dealer_id is not None else group.dealer_id,
        },
    )
    if changed or group.synced_at is None:
        group.synced_at = utcnow()


async def _mirror_members(session: AsyncSession, corp_id: str, chat_id: str, members: list[Mapping[str, Any]]) -> bool:
    rows = (
        await session.exec(select(GroupMember).where(GroupMember.corp_id == corp_id, GroupMember.chat_id == chat_id))
    ).all()
    by_id = {row.member_id: row for row in rows}
    listed: set[str] = set()
    changed = False
    erased = await erased_among(session, corp_id, (str(m["userid"]) for m in members))
    for member in members:
        member_id = str(member["userid"])
        listed.add(member_id)
        if member_id in erased and (from_epoch(member.get("join_time")) or erased[member_id]) <= erased[member_id]:
            continue  # a customer erased since joining: WeCom still lists them, we keep nothing about them
        values: dict[str, Any] = {
            "member_type": int(member.get("type") or member_type_of(member_id)),
            "name": str(member.get("name") or ""),
            "group_nickname": str(member.get("group_nickname") or ""),
            "unionid": str(member.get("unionid") or ""),
            "join_time": from_epoch(member.get("join_time")),
            "join_scene": member.get("join_scene"),
            "invitor": _invitor(member),
            "state": str(member.get("state") or ""),
            "left_at": None,
            "quit_scene": None,
        }
        row = by_id.get(member_id)
        if row is None:
            keys = {"corp_id": corp_id, "chat_id": chat_id, "member_id": member_id}
            row, created = await get_or_create(session, GroupMember, keys, values)
            by_id[member_id] = row
            changed |= created
            if created:
                continue
        changed |= assign(row, values)
    now = utcnow()
    for row in by_id.values():
        if row.member_id not in listed and row.left_at is None and not is_pseudonym(row.member_id):
            assign(row, {"left_at": now})
            changed = True
    return changed
