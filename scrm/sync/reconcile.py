"""Reconciliation after downtime: what WeCom lists against what we hold, applied like the callbacks we missed.

A reconciliation pass (run by the leader, see ``bot/runtime/reconcile.py``) reads each batch of staff members'
customers (batch/get_by_user) and every customer group (groupchat/list + groupchat/get). This module applies what
it read, inside the caller's transaction:

- :func:`apply_listing_page`: each listed relation goes through :func:`~scrm.sync.contacts.apply_contact_detail`
  (the same service a fetch uses). A relation we did not hold live is *found*. A found relation created less than
  the settle window ago is left alone this pass (*deferred*): its add callback may still be on its way, and the
  callback brings the welcome code a found relation cannot have. An older one is applied, and when it was created
  after ``enrol_after`` (the previous pass's cut-off: the baseline pass after an install enrols nobody) the other
  features are told with a :class:`~scrm.lifecycle.ContactAdded` without welcome code: the SOP enrols the contact
  (its welcome step is skipped, WeCom's 20 s are long gone; later steps run) under the same occurrence the callback
  would have used, so a late callback cannot enrol it twice.
- :func:`mark_unlisted_deleted`: a relation we hold live for a listed staff member, added before the listing
  started, that WeCom no longer lists was deleted while we were not listening. It is marked deleted at the
  listing's time with ``deleted_by`` ``unknown`` and ``deleted_source`` ``reconcile``; if the deletion callback
  arrives after all, it replaces those with what really happened (see ``scrm.sync.contacts._mark_deleted``).
- :func:`dismiss_unlisted_groups`: a group we hold active that groupchat/list no longer lists was dismissed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.lifecycle import NO_HOOKS, ContactAdded, LifecycleHooks
from scrm.models import CustomerGroup, DeletedBy, FollowRelation
from scrm.rows import assign, from_epoch
from scrm.sync.contacts import RECONCILED, apply_contact_detail
from scrm.sync.groups import ACTIVE, on_group_dismissed

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(seconds=5)  # WeCom's clock against ours: nothing this close to the listing is judged

Pair = tuple[str, str]  # (external_userid, userid)


@dataclass
class ListingPage:
    """What one page did: the relations it listed, how many found ones were applied and told, and the creation time
    of the newest relation left for its callback (the next pass should come after it has settled)."""

    listed: set[Pair] = field(default_factory=set)
    applied: int = 0
    enrolled: int = 0
    deferred_newest: datetime | None = None


def _pair_of(entry: Mapping[str, Any]) -> tuple[Pair, datetime | None] | None:
    ext = entry.get("external_contact")
    info = entry.get("follow_info")
    if not isinstance(ext, Mapping) or not isinstance(info, Mapping):
        return None
    external_userid, userid = str(ext.get("external_userid") or ""), str(info.get("userid") or "")
    if not external_userid or not userid:
        return None
    return (external_userid, userid), from_epoch(info.get("createtime"))


async def _live_pairs(session: AsyncSession, corp_id: str, external_userids: Iterable[str]) -> set[Pair]:
    rows = await session.exec(
        select(FollowRelation.external_userid, FollowRelation.userid).where(
            FollowRelation.corp_id == corp_id,
            col(FollowRelation.external_userid).in_(sorted(set(external_userids))),
            col(FollowRelation.deleted_at).is_(None),
        )
    )
    return {(ext, userid) for ext, userid in rows.all()}


async def apply_listing_page(
    session: AsyncSession,
    corp_id: str,
    entries: Sequence[Mapping[str, Any]],
    *,
    settled_before: datetime,
    enrol_after: datetime | None,
    hooks: LifecycleHooks = NO_HOOKS,
) -> ListingPage:
    """Apply one page of batch/get_by_user (see the module docstring)."""
    page = ListingPage()
    parsed = [(entry, found) for entry in entries if (found := _pair_of(entry)) is not None]
    live = await _live_pairs(session, corp_id, (pair[0] for _, (pair, _) in parsed))
    for entry, (pair, created) in parsed:
        page.listed.add(pair)
        if pair not in live and created is not None and created > settled_before:
            newest = page.deferred_newest
            page.deferred_newest = created if newest is None or created > newest else newest
            continue
        await apply_contact_detail(session, corp_id, dict(entry), hooks=hooks)
        page.applied += 1
        if pair in live or created is None or enrol_after is None or created <= enrol_after:
            continue
        if await _tell_found(session, corp_id, pair, created, hooks):
            page.enrolled += 1
    return page


async def _tell_found(
    session: AsyncSession, corp_id: str, pair: Pair, created: datetime, hooks: LifecycleHooks
) -> bool:
    """The features learn of a relation whose add callback never reached us; False when it stayed deleted."""
    external_userid, userid = pair
    relation = (
        await session.exec(
            select(FollowRelation).where(
                FollowRelation.corp_id == corp_id,
                FollowRelation.external_userid == external_userid,
                FollowRelation.userid == userid,
            )
        )
    ).first()
    if relation is None or relation.deleted_at is not None:
        return False  # the detail lost to a later deletion we know of
    added = ContactAdded(
        external_userid=external_userid,
        userid=userid,
        state=relation.state,
        channel=relation.channel,
        dealer_code=relation.dealer_code,
        welcome_code="",  # WeCom's welcome code lived 20 s in a callback we never received
        event_time=created,
    )
    await hooks.contact_added(session, corp_id, added)
    await audit.record_once(
        session, corp_id, "contact.found_at_reconcile", "contact", external_userid, {"userid": userid}
    )
    return True


async def mark_unlisted_deleted(
    session: AsyncSession,
    corp_id: str,
    userids: Sequence[str],
    listed: set[Pair],
    *,
    listed_at: datetime,
    hooks: LifecycleHooks = NO_HOOKS,
) -> int:
    """Mark deleted the live relations of ``userids`` that WeCom did not list (see the module docstring)."""
    cutoff = listed_at - CLOCK_SKEW
    rows = await session.exec(
        select(FollowRelation).where(
            FollowRelation.corp_id == corp_id,
            col(FollowRelation.userid).in_(list(userids)),
            col(FollowRelation.deleted_at).is_(None),
        )
    )
    gone = [r for r in rows.all() if (r.external_userid, r.userid) not in listed]
    count = 0
    for relation in gone:
        if relation.added_at is not None and relation.added_at >= cutoff:
            continue  # added while we were listing: WeCom may have answered before it existed
        assign(
            relation,
            {"deleted_at": cutoff, "deleted_by": DeletedBy.UNKNOWN.value, "deleted_source": RECONCILED},
        )
        detail = {"userid": relation.userid, "at": cutoff.isoformat()}
        await audit.record(session, corp_id, "contact.gone_at_reconcile", "contact", relation.external_userid, detail)
        await hooks.subject_changed(session, corp_id, "contact", relation.external_userid, cutoff)
        count += 1
    return count


async def dismiss_unlisted_groups(
    session: AsyncSession, corp_id: str, listed: set[str], *, listed_at: datetime, written_before: datetime
) -> int:
    """Dismiss the groups we hold active that groupchat/list no longer lists: created in WeCom before the listing
    (``listed_at``, WeCom's time) and not written by us since it started (``written_before``, our rows' clock)."""
    cutoff = listed_at - CLOCK_SKEW
    rows = await session.exec(
        select(CustomerGroup).where(CustomerGroup.corp_id == corp_id, CustomerGroup.status == ACTIVE)
    )
    count = 0
    for group in rows.all():
        if group.chat_id in listed or group.updated_at >= written_before:
            continue  # listed, or heard of while we were listing
        if group.wecom_created_at is not None and group.wecom_created_at >= cutoff:
            continue
        await on_group_dismissed(session, corp_id, chat_id=group.chat_id, event_time=cutoff)
        count += 1
    if count:
        log.info("groups found dismissed at reconciliation", extra={"count": count})
    return count
