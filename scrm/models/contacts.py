"""Contacts (external users) and follow relations (staff ↔ contact)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class Stage(StrEnum):
    PROSPECT = "prospect"  # 潜客
    INTENT = "intent"  # 意向
    OWNER = "owner"  # 车主
    LOST = "lost"  # 战败


class DeletedBy(StrEnum):
    STAFF = "staff"  # del_external_contact: staff deleted the customer
    CUSTOMER = "customer"  # del_follow_user: the customer deleted staff (churn)
    TRANSFER = "transfer"  # del_external_contact with Source=DELETE_BY_TRANSFER
    UNKNOWN = "unknown"  # gone from WeCom's listing at reconciliation; the callback that says who is lost


class Contact(SQLModel, table=True):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("corp_id", "external_userid", name="uq_contacts_corp_ext"),
        Index("ix_contacts_corp_active", "corp_id", "last_active_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    external_userid: str = Field(max_length=128)
    name: str = Field(default="", max_length=128)
    avatar: str = Field(default="", max_length=512)
    type: int = Field(default=1)  # 1 WeChat user, 2 WeCom user
    gender: int = Field(default=0)
    unionid: str = Field(default="", max_length=128)
    corp_name: str = Field(default="", max_length=128)
    stage: str = Field(default=Stage.PROSPECT.value, max_length=16)
    intent_level: str | None = Field(default=None, max_length=1)
    score: int = Field(default=0)
    detail_synced_at: datetime | None = ts_field()
    # the customer's last inbound message or tracked-link click (contact.silent counts from here)
    last_active_at: datetime | None = ts_field()
    city: str = Field(default="", max_length=64)  # the city the customer stated (lead routing)
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class FollowRelation(SQLModel, table=True):
    """One staff member's view of one contact (WeCom's follow_user entry)."""

    __tablename__ = "follow_relations"
    __table_args__ = (
        UniqueConstraint("corp_id", "external_userid", "userid", name="uq_follow_corp_ext_user"),
        Index("ix_follow_corp_user", "corp_id", "userid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    external_userid: str = Field(max_length=128)
    userid: str = Field(max_length=64)
    remark: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=512)
    remark_mobiles: list[str] | None = json_field()
    state: str = Field(default="", max_length=64)
    # channel attribution parsed from ``state`` (see scrm.channel)
    channel: str = Field(default="", max_length=32)
    dealer_code: str = Field(default="", max_length=16)
    advisor_userid: str = Field(default="", max_length=64)
    referrer: str = Field(default="", max_length=64)
    campaign: str = Field(default="", max_length=32)
    add_way: int = Field(default=0)
    half_added: bool = Field(default=False)
    added_at: datetime | None = ts_field()
    deleted_at: datetime | None = ts_field()
    deleted_by: str | None = Field(default=None, max_length=16)
    deleted_source: str | None = Field(default=None, max_length=64)
    transfer_fail_reason: str | None = Field(default=None, max_length=64)
    extra: dict[str, Any] | None = json_field()
    updated_at: datetime = ts_field(default_now=True)
