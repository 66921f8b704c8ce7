"""Tombstones of erased customers: a salted hash and the erasure time, nothing that names the customer.

Every writer that may learn about a customer from an event older than now (callbacks waiting in the inbox, a
re-delivered add, an externalcontact/get answer, a message page, a behaviour record) asks :func:`erased_before`
with the event's own time: True means the event predates the erasure and must be dropped. An event later than
the erasure is the customer coming back (a fresh add), and starts a new record.

The salt is random per corp and lives in ``privacy_keys``: it is not derived from a server secret, because a
secret rotation would then make every tombstone unrecognisable (and erased data could come back). Someone who
holds the database and a candidate external_userid can still test it against the tombstones; that is what
recognising a returning event requires.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db_types import utcnow
from scrm.models import PrivacyKey, PrivacyTombstone
from scrm.rows import from_epoch, get_or_create

log = logging.getLogger(__name__)

# kept rows of an erased customer carry this instead of the external_userid (random per erasure: irreversible)
PSEUDONYM_PREFIX = "erased-"


def new_pseudonym() -> str:
    return f"{PSEUDONYM_PREFIX}{secrets.token_hex(8)}"


def is_pseudonym(value: str) -> bool:
    return value.startswith(PSEUDONYM_PREFIX)


def subject_hash(salt: str, external_userid: str) -> str:
    return hashlib.sha256(f"{salt}:{external_userid}".encode()).hexdigest()


_SALTS = "lianyi_privacy_salts"  # session.info key: corp_id → salt (or None), read once per transaction


async def _salt(session: AsyncSession, corp_id: str) -> str | None:
    """The corp's salt, None when no customer was ever erased (a batch of events reads it once)."""
    known: dict[str, str | None] = session.info.setdefault(_SALTS, {})
    if corp_id not in known:
        key = await session.get(PrivacyKey, corp_id)
        known[corp_id] = key.salt if key is not None else None
    return known[corp_id]


async def corp_salt(session: AsyncSession, corp_id: str) -> str:
    """The corp's salt, created (race-free) at the first use."""
    defaults = {"salt": secrets.token_hex(32), "created_at": utcnow()}
    key, _ = await get_or_create(session, PrivacyKey, {"corp_id": corp_id}, defaults)
    session.info.setdefault(_SALTS, {})[corp_id] = key.salt
    return key.salt


async def erased_at(session: AsyncSession, corp_id: str, external_userid: str) -> datetime | None:
    """When the customer was (last) erased; None when never. One primary-key read when no one ever was."""
    if not external_userid:
        return None
    salt = await _salt(session, corp_id)
    if salt is None:
        return None
    hashed = subject_hash(salt, external_userid)
    stmt = select(PrivacyTombstone.erased_at).where(
        PrivacyTombstone.corp_id == corp_id, PrivacyTombstone.subject_hash == hashed
    )
    return (await session.exec(stmt)).first()


async def erased_before(session: AsyncSession, corp_id: str, external_userid: str, at: datetime | None) -> bool:
    """True when the customer was erased at or after ``at`` (None: an event of unknown time, treated as old)."""
    when = await erased_at(session, corp_id, external_userid)
    if when is None:
        return False
    return at is None or at <= when


async def record_tombstone(session: AsyncSession, corp_id: str, external_userid: str, at: datetime) -> str:
    """Write (or move forward) the customer's tombstone; returns the salted hash."""
    hashed = subject_hash(await corp_salt(session, corp_id), external_userid)
    keys = {"corp_id": corp_id, "subject_hash": hashed}
    row, created = await get_or_create(session, PrivacyTombstone, keys, {"erased_at": at})
    if not created and row.erased_at < at:
        row.erased_at = at
    return hashed


async def erased_among(session: AsyncSession, corp_id: str, external_userids: Iterable[str]) -> dict[str, datetime]:
    """The erasure time of each of ``external_userids`` that was erased (two queries, however many ids)."""
    ids = [i for i in set(external_userids) if i]
    salt = await _salt(session, corp_id) if ids else None
    if salt is None:
        return {}
    by_hash = {subject_hash(salt, i): i for i in ids}
    stmt = select(PrivacyTombstone.subject_hash, PrivacyTombstone.erased_at).where(
        PrivacyTombstone.corp_id == corp_id, col(PrivacyTombstone.subject_hash).in_(list(by_hash))
    )
    return {by_hash[h]: at for h, at in (await session.exec(stmt)).all()}


async def dropped_as_erased(
    session: AsyncSession, corp_id: str, external_userid: str, at: datetime, event: str
) -> bool:
    """:func:`erased_before`, logged (without the customer) when True: the caller must drop the event."""
    if not await erased_before(session, corp_id, external_userid, at):
        return False
    log.info("event older than the customer's erasure dropped", extra={"event": event})
    return True


async def follows_since_erasure(
    session: AsyncSession, corp_id: str, external_userid: str, follows: list[Mapping[str, Any]]
) -> list[Mapping[str, Any]] | None:
    """The follow_user entries of an externalcontact/get the sync may apply: all of them when the customer was
    never erased, else only those WeCom created after the erasure (the customer came back); None when that
    leaves none, and the whole detail must be dropped."""
    erased = await erased_at(session, corp_id, external_userid)
    if erased is None:
        return follows
    fresh = [f for f in follows if (from_epoch(f.get("createtime")) or erased) > erased]
    if not fresh:
        log.info("contact detail older than the customer's erasure dropped")
        return None
    return fresh
