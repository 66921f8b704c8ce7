"""Intent, level and stage written back to WeCom as corp tags (企业标签).

The wanted tags of a contact are: one tag per intent code it showed in the last ``TagMapping.intent_days``
days (group ``tags.group`` of intent.yaml), its level (``tags.level_group``) and its stage
(``tags.stage_group``). Names resolve to tag ids through the local mirror of the corp tags (scrm.models
Tag/TagGroup). A name the mirror lacks is requested with one ``add_corp_tag`` command per group (keyed by
group, names and China-time day, so a burst of contacts asks once and a tag an operator deleted is recreated
at most once a day) and left out until the mirror has it: the command's executor applies what WeCom created
(:func:`apply_added_corp_tags`), and the ``refresh_corp_tags`` tick mirrors everything else.

Lianyi manages only the tags of those three groups. For every live follow relation of the contact the wanted
set is compared with the relation's current managed tags; only when they differ is ONE ``mark_tag`` command
written (add and remove together, key derived from the new set and the event that caused it, so a replayed
event writes nothing twice), and ContactTag is mirrored at once: mark_tag through the API raises no callback.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.commands import CommandKind, enqueue
from scrm.lifecycle import LifecycleHooks
from scrm.models import Contact, ContactTag, FollowRelation, IntentSignal, Tag, TagGroup
from scrm.rows import assign, from_epoch, get_or_create, insert_ignore

log = logging.getLogger(__name__)

CHINA = ZoneInfo("Asia/Shanghai")
DEFAULT_LEVEL_TAGS = {"H": "H级", "A": "A级", "B": "B级", "C": "C级"}
DEFAULT_STAGE_TAGS = {"prospect": "潜客", "intent": "意向", "owner": "车主", "lost": "战败"}
DEFAULT_INTENT_DAYS = 30

TagName = tuple[str, str]  # (group name, tag name)


@dataclass(frozen=True)
class TagMapping:
    """intent.yaml ``tags``: which corp tag stands for which intent code, level and stage."""

    group: str
    level_group: str
    stage_group: str
    intents: Mapping[str, str]
    levels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LEVEL_TAGS))
    stages: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STAGE_TAGS))
    intent_days: int = DEFAULT_INTENT_DAYS

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.group, self.level_group, self.stage_group)))

    def all_names(self) -> list[TagName]:
        """Every tag Lianyi may put on a contact, group by group."""
        names = [(self.group, n) for n in self.intents.values()]
        names += [(self.level_group, n) for n in self.levels.values()]
        names += [(self.stage_group, n) for n in self.stages.values()]
        return list(dict.fromkeys(names))

    def wanted(self, intents: Iterable[str], level: str | None, stage: str) -> list[TagName]:
        names = [(self.group, self.intents[code]) for code in intents if code in self.intents]
        if level and level in self.levels:
            names.append((self.level_group, self.levels[level]))
        if stage in self.stages:
            names.append((self.stage_group, self.stages[stage]))
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class MirroredTags:
    """The mirror's live tags of the managed groups."""

    ids: dict[TagName, str]
    group_ids: dict[str, str]  # group name → group_id

    @property
    def managed_ids(self) -> set[str]:
        return set(self.ids.values())


async def mirrored_tags(session: AsyncSession, corp_id: str, groups: Sequence[str]) -> MirroredTags:
    rows = await session.exec(
        select(TagGroup.group_id, TagGroup.name).where(
            TagGroup.corp_id == corp_id, col(TagGroup.name).in_(groups), col(TagGroup.deleted).is_(False)
        )
    )
    group_ids: dict[str, str] = {}
    for group_id, name in rows.all():
        group_ids.setdefault(name, group_id)
    names_by_group_id = {gid: name for name, gid in group_ids.items()}
    tags = await session.exec(
        select(Tag.tag_id, Tag.name, Tag.group_id).where(
            Tag.corp_id == corp_id, col(Tag.group_id).in_(list(names_by_group_id)), col(Tag.deleted).is_(False)
        )
    )
    ids: dict[TagName, str] = {}
    for tag_id, name, group_id in tags.all():
        ids.setdefault((names_by_group_id[group_id], name), tag_id)
    return MirroredTags(ids, group_ids)


async def recent_intents(
    session: AsyncSession, corp_id: str, external_userid: str, *, now: datetime, days: int
) -> list[str]:
    """Intent codes of the contact's message signals in the last ``days`` days, most recent first."""
    rows = await session.exec(
        select(IntentSignal.code)
        .where(
            IntentSignal.corp_id == corp_id,
            IntentSignal.external_userid == external_userid,
            IntentSignal.kind == "message",
            col(IntentSignal.at) >= now - timedelta(days=days),
            col(IntentSignal.at) <= now,
        )
        .order_by(col(IntentSignal.at).desc(), col(IntentSignal.id).desc())
    )
    return list(dict.fromkeys(rows.all()))


async def request_missing_tags(
    session: AsyncSession, corp_id: str, mapping: TagMapping, mirror: MirroredTags, *, now: datetime
) -> list[str]:
    """One add_corp_tag command per group with configured names the mirror lacks; returns the keys."""
    missing: dict[str, list[str]] = {}
    for group, name in mapping.all_names():
        if (group, name) not in mirror.ids:
            missing.setdefault(group, []).append(name)
    keys: list[str] = []
    day = now.astimezone(CHINA).date().isoformat()
    for group, names in missing.items():
        key = f"add_corp_tag:{corp_id}:{group}:{_digest(sorted(names))}:{day}"
        payload = {"group_name": group, "tag": [{"name": n} for n in names]}
        if await enqueue(session, corp_id=corp_id, kind=CommandKind.ADD_CORP_TAG, key=key, payload=payload):
            log.info("requested missing intent tags", extra={"corp_id": corp_id, "group": group, "tags": names})
        keys.append(key)
    return keys


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


async def sync_contact_tags(
    session: AsyncSession,
    corp_id: str,
    contact: Contact,
    mapping: TagMapping,
    *,
    now: datetime,
    ref: str,
    hooks: LifecycleHooks,
) -> list[str]:
    """Bring the contact's Lianyi-managed tags in line with its intents, level and stage (see the module
    docstring). ``ref`` names the event that caused the change. Returns the keys of the mark_tag commands."""
    intents = await recent_intents(session, corp_id, contact.external_userid, now=now, days=mapping.intent_days)
    names = mapping.wanted(intents, contact.intent_level, contact.stage)
    mirror = await mirrored_tags(session, corp_id, mapping.groups)
    if any(name not in mirror.ids for name in names):
        await request_missing_tags(session, corp_id, mapping, mirror, now=now)
    wanted = sorted({mirror.ids[name] for name in names if name in mirror.ids})
    managed = mirror.managed_ids
    relations = (
        await session.exec(
            select(FollowRelation.userid).where(
                FollowRelation.corp_id == corp_id,
                FollowRelation.external_userid == contact.external_userid,
                col(FollowRelation.deleted_at).is_(None),
            )
        )
    ).all()
    keys: list[str] = []
    for userid in sorted(relations):
        key = await _mark_relation(session, corp_id, contact.external_userid, userid, wanted, managed, now, ref, hooks)
        if key:
            keys.append(key)
    return keys


async def _mark_relation(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    userid: str,
    wanted: list[str],
    managed: set[str],
    now: datetime,
    ref: str,
    hooks: LifecycleHooks,
) -> str | None:
    carried = (
        await session.exec(
            select(ContactTag.tag_id).where(
                ContactTag.corp_id == corp_id,
                ContactTag.external_userid == external_userid,
                ContactTag.userid == userid,
            )
        )
    ).all()
    current = {t for t in carried if t in managed}
    add = sorted(set(wanted) - current)
    remove = sorted(current - set(wanted))
    if not add and not remove:
        return None
    key = f"intent_tags:{corp_id}:{external_userid}:{userid}:{_digest(wanted)}:{_digest([ref])}"
    payload = {"userid": userid, "external_userid": external_userid, "add_tag": add, "remove_tag": remove}
    await enqueue(session, corp_id=corp_id, kind=CommandKind.MARK_TAG, key=key, payload=payload)
    base = {"corp_id": corp_id, "external_userid": external_userid, "userid": userid}
    conn = await session.connection()
    for tag_id in add:
        await conn.execute(
            insert_ignore(session, ContactTag, {**base, "tag_id": tag_id, "created_at": now}, [*base, "tag_id"])
        )
    if remove:
        await conn.execute(
            delete(ContactTag).where(
                col(ContactTag.corp_id) == corp_id,
                col(ContactTag.external_userid) == external_userid,
                col(ContactTag.userid) == userid,
                col(ContactTag.tag_id).in_(remove),
            )
        )
    if add:
        await hooks.contact_tagged(session, corp_id, external_userid, userid, add, now)
    return key


async def apply_added_corp_tags(session: AsyncSession, corp_id: str, tag_group: Mapping[str, Any]) -> int:
    """Mirror the ``tag_group`` add_corp_tag returned (the group and the tags just created), leaving every other
    tag alone; returns how many tags it wrote."""
    group_id = str(tag_group.get("group_id") or "")
    if not group_id:
        return 0
    group_values: dict[str, Any] = {
        "name": str(tag_group.get("group_name") or ""),
        "deleted": False,
        "wecom_created_at": from_epoch(tag_group.get("create_time")),
    }
    group, created = await get_or_create(session, TagGroup, {"corp_id": corp_id, "group_id": group_id}, group_values)
    if not created:
        assign(group, group_values)
    written = 0
    for tag in tag_group.get("tag") or []:
        if not isinstance(tag, Mapping) or not tag.get("id"):
            continue
        values: dict[str, Any] = {
            "group_id": group_id,
            "name": str(tag.get("name") or ""),
            "order": int(tag.get("order") or 0),
            "deleted": False,
            "wecom_created_at": from_epoch(tag.get("create_time")),
        }
        row, tag_created = await get_or_create(session, Tag, {"corp_id": corp_id, "tag_id": str(tag["id"])}, values)
        if not tag_created:
            assign(row, values)
        written += 1
    await session.flush()
    return written
