"""Customer groups (客户群) and their members."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class CustomerGroup(SQLModel, table=True):
    __tablename__ = "customer_groups"
    __table_args__ = (UniqueConstraint("corp_id", "chat_id", name="uq_groups_corp_chat"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    chat_id: str = Field(max_length=128)
    name: str = Field(default="", max_length=128)
    owner_userid: str = Field(default="", max_length=64)
    notice: str = Field(default="", max_length=2048)
    dealer_id: int | None = Field(default=None, foreign_key="dealers.id", index=True)
    status: str = Field(default="active", max_length=16)  # active | dismissed
    member_version: str = Field(default="", max_length=64)
    member_count: int = Field(default=0)
    tags: list[str] | None = json_field()  # operators' group tags (WeCom has none for customer groups)
    wecom_created_at: datetime | None = ts_field()
    dismissed_at: datetime | None = ts_field()
    synced_at: datetime | None = ts_field()
    updated_at: datetime = ts_field(default_now=True)


class GroupMember(SQLModel, table=True):
    __tablename__ = "group_members"
    __table_args__ = (
        UniqueConstraint("corp_id", "chat_id", "member_id", name="uq_group_members_corp_chat_member"),
        Index("ix_group_members_member", "corp_id", "member_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    chat_id: str = Field(max_length=128)
    member_id: str = Field(max_length=128)  # userid (staff) or external_userid (customer)
    member_type: int = Field(default=2)  # 1 staff, 2 customer
    name: str = Field(default="", max_length=128)
    group_nickname: str = Field(default="", max_length=128)
    unionid: str = Field(default="", max_length=128)
    join_time: datetime | None = ts_field()
    join_scene: int | None = Field(default=None)  # 1 invited directly, 2 via link, 3 via QR code
    invitor: str = Field(default="", max_length=64)
    state: str = Field(default="", max_length=64)
    left_at: datetime | None = ts_field()
    quit_scene: int | None = Field(default=None)  # 0 left, 1 removed by owner
    updated_at: datetime = ts_field(default_now=True)
