"""Contacts and follow relations: the change_external_contact callbacks and externalcontact/get results.

Every function runs inside the caller's transaction, applies one event idempotently (a replay changes no row) and
appends its outbox commands in the same transaction. An event older than the customer's erasure (PIPL) is dropped;
a detail keeps only relations created after it.

Ordering rule (callbacks arrive late, twice, or out of order). A follow relation remembers ``added_at``
(the add event's time, or WeCom's ``createtime``) and ``deleted_at``:

- an add older than the recorded deletion (``event_time < deleted_at``) is stale and changes nothing; an
  add at or after it is a re-add and clears ``deleted_at``;
- a deletion older than the current ``added_at`` is stale; a deletion for a relation we never saw leaves
  a tombstone (a deleted relation) so the late add it overtook cannot resurrect it;
- a detail (externalcontact/get) resurrects a deleted relation only when WeCom's ``createtime`` is later
  than our ``deleted_at`` (the customer came back after the deletion). Otherwise the detail was fetched
  before the deletion happened (or lags behind it) and that relation is left untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.channel import parse_state
from scrm.commands import CommandKind, enqueue
from scrm.db_types import utcnow
from scrm.lifecycle import NO_HOOKS, ContactAdded, LifecycleHooks
from scrm.models import Contact, ContactTag, DeletedBy, FollowRelation
from scrm.privacy.tombstones import dropped_as_erased, follows_since_erasure
from scrm.rows import assign, ensure_corp, epoch, from_epoch, get_or_create, insert_ignore

log = logging.getLogger(__name__)

DELETE_BY_TRANSFER = "DELETE_BY_TRANSFER"
RECONCILED = "reconcile"  # deleted_source of a deletion found by a reconciliation pass (scrm.sync.reconcile)
PERSONAL_TAG_TYPE = 2  # follow_user.tags[].type: 1 corp tag, 2 the staff member's own tag, 3 rule-group tag


def channel_values(state: str) -> dict[str, Any]:
    """The follow-relation columns that come from a ``state``."""
    info = parse_state(state)
    return {
        "state": state,
        "channel": info.channel,
        "dealer_code": info.dealer,
        "advisor_userid": info.advisor,
        "referrer": info.referrer,
        "campaign": info.campaign,
    }


async def _contact(session: AsyncSession, corp_id: str, external_userid: str, *, likely_new: bool = False) -> Contact:
    await ensure_corp(session, corp_id)
    keys = {"corp_id": corp_id, "external_userid": external_userid}
    row, _ = await get_or_create(session, Contact, keys, insert_first=likely_new)
    return row


async def _relation(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    userid: str,
    defaults: Mapping[str, Any],
    *,
    likely_new: bool = False,
) -> tuple[FollowRelation, bool]:
    keys = {"corp_id": corp_id, "external_userid": external_userid, "userid": userid}
    return await get_or_create(session, FollowRelation, keys, defaults, insert_first=likely_new)


async def _fetch_contact(session: AsyncSession, corp_id: str, external_userid: str, event_time: datetime) -> None:
    await enqueue(
        session,
        corp_id=corp_id,
        kind=CommandKind.FETCH_CONTACT,
        key=f"fetch_contact:{external_userid}:{epoch(event_time)}",
        payload={"external_userid": external_userid},
    )


# ---- callbacks ------------------------------------------------------------------------------------


async def on_contact_added(
    session: AsyncSession,
    corp_id: str,
    *,
    userid: str,
    external_userid: str,
    state: str,
    welcome_code: str,
    event_time: datetime,
    half: bool = False,
    hooks: LifecycleHooks = NO_HOOKS,
) -> None:
    """add_external_contact / add_half_external_contact: record the relation, fetch details, and tell the other
    features (the SOP engine answers with the welcome of the template that has a welcome step)."""
    if await dropped_as_erased(session, corp_id, external_userid, event_time, "add"):
        return
    # An add is usually the first sight of the contact and of the relation: insert before reading.
    await _contact(session, corp_id, external_userid, likely_new=True)
    values: dict[str, Any] = {
        **channel_values(state),
        "added_at": event_time,
        "half_added": half,
        "deleted_at": None,
        "deleted_by": None,
        "deleted_source": None,
    }
    relation, created = await _relation(session, corp_id, external_userid, userid, values, likely_new=True)
    if not created:
        if relation.deleted_at is not None and event_time < relation.deleted_at:
            log.info(
                "stale add ignored: relation was deleted after this add",
                extra={"external_userid": external_userid, "userid": userid, "deleted_at": str(relation.deleted_at)},
            )
            return
        if relation.added_at is None or event_time >= relation.added_at or relation.deleted_at is not None:
            assign(relation, values)
    await _fetch_contact(session, corp_id, external_userid, event_time)
    added = ContactAdded(
        external_userid=external_userid,
        userid=userid,
        state=relation.state,
        channel=relation.channel,
        dealer_code=relation.dealer_code,
        welcome_code=welcome_code,
        event_time=event_time,
    )
    await hooks.contact_added(session, corp_id, added)


async def on_contact_edited(
    session: AsyncSession, corp_id: str, *, userid: str, external_userid: str, event_time: datetime
) -> None:
    """edit_external_contact: remark or tags changed in the client; fetch the detail."""
    if await dropped_as_erased(session, corp_id, external_userid, event_time, "edit"):
        return
    await _contact(session, corp_id, external_userid)
    await _fetch_contact(session, corp_id, external_userid, event_time)


async def _mark_deleted(
    session: AsyncSession,
    corp_id: str,
    *,
    userid: str,
    external_userid: str,
    event_time: datetime,
    deleted_by: DeletedBy,
    source: str,
    hooks: LifecycleHooks,
) -> bool:
    """Record a deletion; True when it changed something (False for replays and stale deletions)."""
    if await dropped_as_erased(session, corp_id, external_userid, event_time, "delete"):
        return False
    await _contact(session, corp_id, external_userid)
    values: dict[str, Any] = {
        "deleted_at": event_time,
        "deleted_by": deleted_by.value,
        "deleted_source": source or None,
    }
    relation, created = await _relation(session, corp_id, external_userid, userid, values)
    if created:
        return True
    if relation.added_at is not None and event_time < relation.added_at:
        log.info("stale deletion ignored: relation was re-added later", extra={"external_userid": external_userid})
        return False
    if relation.deleted_at is not None and relation.deleted_source != RECONCILED:
        return False  # a replay; a deletion only a reconciliation saw gets who and when from the callback
    changed = assign(relation, values)
    if changed:
        await hooks.subject_changed(session, corp_id, "contact", external_userid, event_time)
    return changed


async def on_deleted_by_staff(
    session: AsyncSession,
    corp_id: str,
    *,
    userid: str,
    external_userid: str,
    source: str,
    event_time: datetime,
    hooks: LifecycleHooks = NO_HOOKS,
) -> None:
    """del_external_contact: the staff member deleted the customer (or a transfer moved them away)."""
    by = DeletedBy.TRANSFER if source == DELETE_BY_TRANSFER else DeletedBy.STAFF
    if await _mark_deleted(
        session,
        corp_id,
        userid=userid,
        external_userid=external_userid,
        event_time=event_time,
        deleted_by=by,
        source=source,
        hooks=hooks,
    ):
        detail = {"userid": userid, "deleted_by": by.value, "source": source, "at": event_time.isoformat()}
        await audit.record(session, corp_id, f"contact.deleted_by_{by.value}", "contact", external_userid, detail)


async def on_staff_deleted_by_contact(
    session: AsyncSession,
    corp_id: str,
    *,
    userid: str,
    external_userid: str,
    event_time: datetime,
    hooks: LifecycleHooks = NO_HOOKS,
) -> None:
    """del_follow_user: the customer deleted the staff member — a churn signal."""
    if await _mark_deleted(
        session,
        corp_id,
        userid=userid,
        external_userid=external_userid,
        event_time=event_time,
        deleted_by=DeletedBy.CUSTOMER,
        source="",
        hooks=hooks,
    ):
        detail = {"userid": userid, "at": event_time.isoformat()}
        await audit.record(session, corp_id, "contact.churned", "contact", external_userid, detail)


async def on_transfer_failed(
    session: AsyncSession,
    corp_id: str,
    *,
    userid: str,
    external_userid: str,
    fail_reason: str,
    event_time: datetime,
    hooks: LifecycleHooks = NO_HOOKS,
) -> None:
    """transfer_fail: ``userid`` is the takeover member; the customer stays with the handover member(s).

    The reason is written on the contact's live relations with other members (the ones the transfer would
    have moved) and in the audit log.
    """
    if await dropped_as_erased(session, corp_id, external_userid, event_time, "transfer_fail"):
        return
    await _contact(session, corp_id, external_userid)
    rows = await session.exec(
        select(FollowRelation).where(
            FollowRelation.corp_id == corp_id,
            FollowRelation.external_userid == external_userid,
            FollowRelation.userid != userid,
            col(FollowRelation.deleted_at).is_(None),
        )
    )
    for row in rows.all():
        assign(row, {"transfer_fail_reason": fail_reason})
    detail = {"takeover_userid": userid, "reason": fail_reason, "at": event_time.isoformat()}
    await audit.record_once(session, corp_id, "contact.transfer_failed", "contact", external_userid, detail)
    await hooks.customer_transfer_failed(
        session,
        corp_id,
        takeover_userid=userid,
        external_userid=external_userid,
        fail_reason=fail_reason,
        at=event_time,
    )


# ---- externalcontact/get ----------------------------------------------------------------------------


def _follow_users(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """follow_user (externalcontact/get) or follow_info (one entry of batch/get_by_user)."""
    users = data.get("follow_user")
    if users is None:
        info = data.get("follow_info")
        users = [info] if isinstance(info, Mapping) else []
    return [u for u in users if isinstance(u, Mapping) and u.get("userid")]


def _tag_ids(follow: Mapping[str, Any]) -> set[str]:
    """Corp and rule-group tag ids on one follow entry (personal tags are not mirrored)."""
    ids: set[str] = set()
    for tag in follow.get("tags") or []:
        if isinstance(tag, Mapping) and tag.get("tag_id") and tag.get("type", 1) != PERSONAL_TAG_TYPE:
            ids.add(str(tag["tag_id"]))
    ids.update(str(t) for t in follow.get("tag_id") or [] if t)
    return ids


async def sync_contact_tags(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    userid: str,
    tag_ids: Iterable[str],
    *,
    at: datetime | None = None,
    hooks: LifecycleHooks = NO_HOOKS,
) -> bool:
    """Make the contact_tags of one follow relation exactly ``tag_ids``; True when something changed.

    ``at`` is when the tags were seen (the SOP triggers and exits date from it; default now)."""
    want = set(tag_ids)
    rows = (
        await session.exec(
            select(ContactTag).where(
                ContactTag.corp_id == corp_id,
                ContactTag.external_userid == external_userid,
                ContactTag.userid == userid,
            )
        )
    ).all()
    have = {row.tag_id for row in rows}
    for row in rows:
        if row.tag_id not in want:
            await session.delete(row)
    conn = await session.connection()
    added = sorted(want - have)
    for tag_id in added:
        values = {
            "corp_id": corp_id,
            "external_userid": external_userid,
            "userid": userid,
            "tag_id": tag_id,
            "created_at": utcnow(),
        }
        await conn.execute(
            insert_ignore(session, ContactTag, values, ["corp_id", "external_userid", "userid", "tag_id"])
        )
    if added:
        await hooks.contact_tagged(session, corp_id, external_userid, userid, added, at or utcnow())
    return want != have


async def apply_contact_detail(
    session: AsyncSession, corp_id: str, data: dict[str, Any], *, hooks: LifecycleHooks = NO_HOOKS
) -> None:
    """Mirror an externalcontact/get response (``external_contact`` + ``follow_user``) into our tables.

    Also accepts one ``batch/get_by_user`` entry (``external_contact`` + ``follow_info``). See the module
    docstring for when a deleted relation is (not) resurrected.
    """
    ext = data.get("external_contact") or {}
    external_userid = str(ext.get("external_userid") or "")
    if not external_userid:
        log.warning("contact detail without external_userid ignored", extra={"keys": sorted(data)})
        return
    follows = await follows_since_erasure(session, corp_id, external_userid, _follow_users(data))
    if follows is None:
        return
    contact = await _contact(session, corp_id, external_userid)
    changed = assign(
        contact,
        {
            "name": str(ext.get("name") or ""),
            "avatar": str(ext.get("avatar") or ""),
            "type": int(ext.get("type") or 1),
            "gender": int(ext.get("gender") or 0),
            "unionid": str(ext.get("unionid") or ""),
            "corp_name": str(ext.get("corp_name") or ""),
        },
    )
    for follow in follows:
        changed |= await _apply_follow(session, corp_id, external_userid, follow, hooks)
    if changed or contact.detail_synced_at is None:
        contact.detail_synced_at = utcnow()


async def _apply_follow(
    session: AsyncSession, corp_id: str, external_userid: str, follow: Mapping[str, Any], hooks: LifecycleHooks
) -> bool:
    userid = str(follow["userid"])
    createtime = from_epoch(follow.get("createtime"))
    mobiles = [str(m) for m in follow.get("remark_mobiles") or []]
    values: dict[str, Any] = {
        "remark": str(follow.get("remark") or ""),
        "description": str(follow.get("description") or ""),
        "remark_mobiles": mobiles,
        "add_way": int(follow.get("add_way") or 0),
        **channel_values(str(follow.get("state") or "")),
    }
    if createtime is not None:
        values["added_at"] = createtime
    relation, created = await _relation(session, corp_id, external_userid, userid, values)
    if not created and relation.deleted_at is not None:
        if createtime is None or createtime <= relation.deleted_at:
            log.info(
                "detail ignored for a relation deleted after it was fetched",
                extra={"external_userid": external_userid, "userid": userid},
            )
            return False
        values.update(deleted_at=None, deleted_by=None, deleted_source=None, transfer_fail_reason=None)
    changed = created or assign(relation, values)
    return await sync_contact_tags(session, corp_id, external_userid, userid, _tag_ids(follow), hooks=hooks) or changed
