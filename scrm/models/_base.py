"""Helpers for table definitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field

from scrm.db_types import UTCDateTime, utcnow


def ts_field(*, nullable: bool = True, index: bool = False, default_now: bool = False) -> Any:
    """A timezone-aware UTC timestamp column."""
    if default_now:
        return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=index))
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def json_field(*, default: Any = None) -> Any:
    """A JSON column (JSON on SQLite, JSON on PostgreSQL)."""
    if default is None:
        return Field(default=None, sa_column=Column(JSON, nullable=True))
    return Field(default_factory=lambda: type(default)(default), sa_column=Column(JSON, nullable=False))


__all__ = ["datetime", "json_field", "ts_field"]
