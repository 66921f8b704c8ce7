"""``lianyi privacy export``: everything held about one customer, as one JSON document.

The document has a key for every table of :data:`~scrm.privacy.holdings.HOLDINGS` (an empty list when the
customer has no row there), each row with all its columns as stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.privacy.holdings import find_all, resolve
from scrm.privacy.tombstones import corp_salt, erased_at, subject_hash

EXPORT_FORMAT = "lianyi.privacy.export/1"


def row_json(row: SQLModel) -> dict[str, Any]:
    """A row's columns as JSON values (times in ISO 8601)."""
    return row.model_dump(mode="json")


async def export_customer(
    session: AsyncSession, corp_id: str, external_userid: str, *, actor: str, now: datetime
) -> dict[str, Any]:
    """The export document; the request is audited under the subject's salted hash (no personal data)."""
    subject = await resolve(session, corp_id, external_userid)
    found = await find_all(session, subject)
    tables = {table: [row_json(r) for r in rows] for table, rows in found.items()}
    erased = await erased_at(session, corp_id, external_userid)
    hashed = subject_hash(await corp_salt(session, corp_id), external_userid)
    counts = {table: len(rows) for table, rows in tables.items() if rows}
    await audit.record(session, corp_id, "privacy.exported", "customer_hash", hashed, {"counts": counts}, actor=actor)
    return {
        "format": EXPORT_FORMAT,
        "corp_id": corp_id,
        "external_userid": external_userid,
        "exported_at": now.isoformat(),
        "erased_at": erased.isoformat() if erased is not None else None,
        "tables": tables,
    }
