"""Every table is either exported and erased, or declared free of personal data with a reason — so a new table
cannot be forgotten by ``lianyi privacy export`` and ``erase``."""

from __future__ import annotations

from sqlalchemy import Table

from scrm.models import metadata
from scrm.privacy.erase import DELETED, SCRUBBERS
from scrm.privacy.holdings import HOLDINGS, NO_PERSONAL_DATA

# columns that name a customer, or reach one through a row that does, or carry arbitrary event data
CUSTOMER_COLUMNS = frozenset(
    {"external_userid", "member_id", "subject_id", "recipient_id", "target_id", "lead_id", "enrolment_id"}
)
FREE_FORM_COLUMNS = frozenset({"payload", "detail", "context", "reasons"})
CUSTOMER_TABLES = frozenset({"contacts", "leads", "sop_enrolments", "follow_relations"})

HELD = {h.table for h in HOLDINGS}


def _references_a_customer(table: Table) -> set[str]:
    names = {c.name for c in table.columns}
    found = names & (CUSTOMER_COLUMNS | FREE_FORM_COLUMNS)
    for fk in table.foreign_keys:
        if fk.column.table.name in CUSTOMER_TABLES:
            found.add(fk.parent.name)
    return found


def test_every_table_is_exported_or_declared_free_of_personal_data() -> None:
    tables = set(metadata.tables)
    assert not HELD & set(NO_PERSONAL_DATA), "a table is both exported and declared free of personal data"
    unclassified = tables - HELD - set(NO_PERSONAL_DATA)
    assert not unclassified, f"add these tables to scrm.privacy.holdings (HOLDINGS or NO_PERSONAL_DATA): {unclassified}"
    assert not (HELD | set(NO_PERSONAL_DATA)) - tables, "holdings name a table that does not exist"
    assert all(len(reason) >= 10 for reason in NO_PERSONAL_DATA.values())


def test_a_table_that_references_a_customer_is_exported() -> None:
    for table in metadata.tables.values():
        refs = _references_a_customer(table)
        if refs:
            assert table.name in HELD, f"{table.name} references customers through {sorted(refs)} but is not exported"


def test_every_exported_table_is_erased() -> None:
    for table in HELD:
        assert (table in SCRUBBERS) != (table in DELETED), table
    assert set(SCRUBBERS) | DELETED == HELD
