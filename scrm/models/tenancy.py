"""Corps, dealers and staff."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field

# Staff.extra flag: the row was created by the roster import for a userid WeCom sync has not reported (yet)
ROSTER_UNMATCHED = "roster_unmatched"


class StaffRole(StrEnum):
    ADVISOR = "advisor"
    MANAGER = "manager"
    OPERATOR = "operator"
    OTHER = "other"


class Corp(SQLModel, table=True):
    __tablename__ = "corps"

    corp_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=128)
    created_at: datetime = ts_field(default_now=True)


class Dealer(SQLModel, table=True):
    __tablename__ = "dealers"
    __table_args__ = (UniqueConstraint("corp_id", "code", name="uq_dealers_corp_code"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    code: str = Field(max_length=16)
    name: str = Field(default="", max_length=128)
    city: str = Field(default="", max_length=64)
    region: str = Field(default="", max_length=64)
    # what SOP templates may quote (dealer.address, dealer.hours…); answers: keyword topic → the dealer's reply
    address: str = Field(default="", max_length=256)
    phone: str = Field(default="", max_length=32)
    hours: str = Field(default="", max_length=128)
    answers: dict[str, Any] | None = json_field()
    brands: list[str] | None = json_field()
    models: list[str] | None = json_field()
    # machine-readable opening hours (scrm.leads.calendar): "mon-fri 09:00-18:00; sat,sun 10:00-17:00"
    opening_hours: str = Field(default="", max_length=256)
    created_at: datetime = ts_field(default_now=True)


class Staff(SQLModel, table=True):
    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("corp_id", "userid", name="uq_staff_corp_userid"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(foreign_key="corps.corp_id", index=True, max_length=64)
    userid: str = Field(max_length=64)
    name: str = Field(default="", max_length=128)
    dealer_id: int | None = Field(default=None, foreign_key="dealers.id", index=True)
    role: str = Field(default=StaffRole.ADVISOR.value, max_length=16)
    has_contact_permission: bool = Field(default=True)
    # on-duty schedule in the opening-hours format ("" = the dealer's opening hours) and open-lead capacity
    duty_hours: str = Field(default="", max_length=256)
    capacity: int = Field(default=20)
    active: bool = Field(default=True)
    extra: dict[str, Any] | None = json_field()
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)
