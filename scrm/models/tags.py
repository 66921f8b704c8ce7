"""Corp tags (企业标签) mirrored from WeCom, and which contact carries which tag."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import ts_field


class TagGroup(SQLModel, table=True):
    __tablename__ = "tag_groups"
    __table_args__ = (UniqueConstraint("corp_id", "group_id", name="uq_tag_groups_corp_group"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    group_id: str = Field(max_length=128)
    name: str = Field(default="", max_length=128)
    order: int = Field(default=0)
    strategy_id: int | None = Field(default=None)
    deleted: bool = Field(default=False)
    wecom_created_at: datetime | None = ts_field()
    updated_at: datetime = ts_field(default_now=True)


class Tag(SQLModel, table=True):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("corp_id", "tag_id", name="uq_tags_corp_tag"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    tag_id: str = Field(max_length=128)
    group_id: str = Field(max_length=128, index=True)
    name: str = Field(default="", max_length=128)
    order: int = Field(default=0)
    strategy_id: int | None = Field(default=None)
    deleted: bool = Field(default=False)
    wecom_created_at: datetime | None = ts_field()
    updated_at: datetime = ts_field(default_now=True)


class ContactTag(SQLModel, table=True):
    """A corp tag on a contact as marked by one staff member (tags live on the follow relation)."""

    __tablename__ = "contact_tags"
    __table_args__ = (
        UniqueConstraint("corp_id", "external_userid", "userid", "tag_id", name="uq_contact_tags"),
        Index("ix_contact_tags_tag", "corp_id", "tag_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    external_userid: str = Field(max_length=128)
    userid: str = Field(max_length=64)
    tag_id: str = Field(max_length=128)
    created_at: datetime = ts_field(default_now=True)
