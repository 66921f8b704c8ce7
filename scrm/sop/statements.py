"""The engine's hot statements, built once per dialect (``INSERT … ON CONFLICT DO NOTHING``, values bound per call)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from scrm.models import SopEnrolment, SopStepRun, SopVersion


def dialect_insert(dialect: str) -> Any:
    return pg_insert if dialect == "postgresql" else sqlite_insert


@functools.cache
def insert_version(dialect: str) -> Any:
    table = SopVersion.__table__  # type: ignore[attr-defined]
    values = {
        c: bindparam(c, type_=table.c[c].type) for c in ("template_id", "version", "name", "kind", "spec", "created_at")
    }
    return (
        dialect_insert(dialect)(table).values(values).on_conflict_do_nothing(index_elements=["template_id", "version"])
    )


@functools.cache
def insert_enrolment(dialect: str) -> Any:
    table = SopEnrolment.__table__  # type: ignore[attr-defined]
    columns = (
        "corp_id", "template_id", "version", "subject_type", "subject_id", "occurrence", "staff_userid", "priority",
        "status", "next_step", "next_due_at", "context", "enrolled_at", "updated_at",
    )  # fmt: skip
    values = {c: bindparam(c, type_=table.c[c].type) for c in columns}
    unique = ["corp_id", "template_id", "subject_type", "subject_id", "occurrence"]
    return (
        dialect_insert(dialect)(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(table.c.id)
    )


@functools.cache
def claim_step(dialect: str) -> Any:
    table = SopStepRun.__table__  # type: ignore[attr-defined]
    columns = (
        "corp_id",
        "enrolment_id",
        "step_key",
        "step_id",
        "action",
        "outcome",
        "reason",
        "due_at",
        "ran_at",
        "commands",
    )
    values = {c: bindparam(c, type_=table.c[c].type) for c in columns}
    return dialect_insert(dialect)(table).values(values).on_conflict_do_nothing(index_elements=["step_key"])
