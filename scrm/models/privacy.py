"""Erasure tombstones (PIPL): which customers were erased and when, kept without their identity.

- :class:`PrivacyKey` — one random salt per corp, created at the first erasure. Tombstones store
  ``sha256(salt:external_userid)``, never the id itself, so the table names nobody on its own.
- :class:`PrivacyTombstone` — one row per erased customer: the salted hash and the time of the (latest)
  erasure. Sync and ingest consult it so an event older than the erasure (an inbox row not yet processed, a
  re-delivered callback, a stale externalcontact/get) cannot bring the data back; an event later than it is
  the customer coming back, and starts a new record.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import ts_field


class PrivacyKey(SQLModel, table=True):
    __tablename__ = "privacy_keys"

    corp_id: str = Field(primary_key=True, max_length=64)
    salt: str = Field(max_length=64)  # 32 random bytes, hex
    created_at: datetime = ts_field(default_now=True)


class PrivacyTombstone(SQLModel, table=True):
    __tablename__ = "privacy_tombstones"
    __table_args__ = (UniqueConstraint("corp_id", "subject_hash", name="uq_privacy_tombstone_subject"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    subject_hash: str = Field(max_length=64)  # sha256 hex of salt:external_userid
    erased_at: datetime = ts_field(nullable=False)
