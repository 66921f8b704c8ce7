"""Corp tags (企业标签): change_external_tag callbacks and the get_corp_tag_list mirror.

Callbacks only say *that* something changed, so every one of them schedules a REFRESH_CORP_TAGS command and
the mirror is rebuilt from the full list by :func:`apply_corp_tag_list`: groups and tags missing from the
list (or flagged ``deleted``) are marked deleted, and contacts lose deleted tags. Rule-group tags
(``strategy_id`` set) come from another API and are left alone when missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.commands import CommandKind, enqueue
from scrm.models import ContactTag, Tag, TagGroup
from scrm.rows import assign, ensure_corp, epoch, from_epoch, get_or_create

log = logging.getLogger(__name__)


async def on_tag_changed(
    session: AsyncSession,
    corp_id: str,
    *,
    change_type: str,
    tag_type: str,
    tag_id: str,
    event_time: datetime,
    strategy_id: int | None = None,
) -> None:
    """create / update / delete / shuffle of a tag or tag group: refresh the whole list."""
    await enqueue(
        session,
        corp_id=corp_id,
        kind=CommandKind.REFRESH_CORP_TAGS,
        key=f"refresh_corp_tags:{change_type}:{tag_type}:{tag_id}:{strategy_id or ''}:{epoch(event_time)}",
        payload={},
    )


async def apply_corp_tag_list(session: AsyncSession, corp_id: str, tag_groups: list[dict[str, Any]]) -> None:
    """Mirror get_corp_tag_list's ``tag_group`` list exactly (see the module docstring)."""
    await ensure_corp(session, corp_id)
    seen_groups: set[str] = set()
    seen_tags: set[str] = set()
    for group in tag_groups:
        if not isinstance(group, Mapping) or not group.get("group_id"):
            continue
        group_id = str(group["group_id"])
        seen_groups.add(group_id)
        group_deleted = bool(group.get("deleted"))
        values: dict[str, Any] = {
            "name": str(group.get("group_name") or ""),
            "order": int(group.get("order") or 0),
            "deleted": group_deleted,
            "wecom_created_at": from_epoch(group.get("create_time")),
        }
        row, created = await get_or_create(session, TagGroup, {"corp_id": corp_id, "group_id": group_id}, values)
        if not created:
            assign(row, values)
        for tag in group.get("tag") or []:
            if not isinstance(tag, Mapping) or not tag.get("id"):
                continue
            tag_id = str(tag["id"])
            seen_tags.add(tag_id)
            tag_values: dict[str, Any] = {
                "group_id": group_id,
                "name": str(tag.get("name") or ""),
                "order": int(tag.get("order") or 0),
                "deleted": group_deleted or bool(tag.get("deleted")),
                "wecom_created_at": from_epoch(tag.get("create_time")),
            }
            tag_row, tag_created = await get_or_create(session, Tag, {"corp_id": corp_id, "tag_id": tag_id}, tag_values)
            if not tag_created:
                assign(tag_row, tag_values)
    await _mark_missing_deleted(session, corp_id, seen_groups, seen_tags)
    await _drop_deleted_contact_tags(session, corp_id)


async def _mark_missing_deleted(session: AsyncSession, corp_id: str, groups: set[str], tags: set[str]) -> None:
    for group in (
        await session.exec(
            select(TagGroup).where(
                TagGroup.corp_id == corp_id, col(TagGroup.strategy_id).is_(None), col(TagGroup.deleted).is_(False)
            )
        )
    ).all():
        if group.group_id not in groups:
            assign(group, {"deleted": True})
    for tag in (
        await session.exec(
            select(Tag).where(Tag.corp_id == corp_id, col(Tag.strategy_id).is_(None), col(Tag.deleted).is_(False))
        )
    ).all():
        if tag.tag_id not in tags:
            assign(tag, {"deleted": True})
    await session.flush()


async def _drop_deleted_contact_tags(session: AsyncSession, corp_id: str) -> None:
    deleted_ids = select(Tag.tag_id).where(Tag.corp_id == corp_id, col(Tag.deleted).is_(True))
    stmt = delete(ContactTag).where(
        col(ContactTag.corp_id) == corp_id,
        col(ContactTag.tag_id).in_(deleted_ids),
    )
    conn = await session.connection()
    result = await conn.execute(stmt)
    if result.rowcount:
        log.info("removed deleted tags from contacts", extra={"corp_id": corp_id, "rows": result.rowcount})
