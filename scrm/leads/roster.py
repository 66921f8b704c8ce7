"""The dealer and staff roster: read from YAML or CSV files, validated as a whole, imported as one upsert.

- :func:`parse_roster` / :func:`parse_rosters` read files (``.yaml``/``.yml``: ``dealers:`` and/or ``staff:``
  lists, see :mod:`scrm.leads.roster_yaml`; ``.csv``: one table, see :mod:`scrm.leads.roster_csv`) and raise
  :class:`RosterError` with every problem at ``file:line[:col]`` (Chinese messages). Codes and userids must
  be unique across all files of one import.
- :func:`import_roster` checks what needs the database (a staff member's dealer must be in the roster or
  already stored; a userid WeCom sync has not seen is a warning, an error with ``strict``), then upserts
  dealers by (corp, code) and staff by (corp, userid) in the caller's transaction. Fields absent from the
  file are left as they are, so a second import of the same file changes nothing. The importing user
  (``actor``) must hold ``roster.import``; the import is audited (``roster.imported``: the files, the counts,
  and digests of the touched dealer and staff rows before and after).

Staff rows normally come from WeCom sync (:mod:`scrm.sync.staff`). A row the roster creates for a userid sync
never saw carries ``extra["roster_unmatched"] = True`` so that later imports still warn about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.accounts.actors import require_actor
from scrm.accounts.permissions import Permission
from scrm.leads.roster_csv import read_csv_roster
from scrm.leads.roster_fields import (
    DealerEntry,
    Roster,
    RosterError,
    RosterProblem,
    StaffEntry,
    Where,
    combine,
)
from scrm.leads.roster_yaml import read_yaml_roster
from scrm.models import Dealer, Staff
from scrm.models.tenancy import ROSTER_UNMATCHED
from scrm.rows import assign, ensure_corp

__all__ = [
    "ROSTER_UNMATCHED",
    "DealerEntry",
    "ImportSummary",
    "Roster",
    "RosterError",
    "RosterProblem",
    "StaffEntry",
    "import_roster",
    "parse_roster",
    "parse_rosters",
]

_CHUNK = 500  # keys per IN (...) lookup


@dataclass(frozen=True)
class ImportSummary:
    dealers_created: int = 0
    dealers_updated: int = 0
    dealers_unchanged: int = 0
    staff_created: int = 0
    staff_updated: int = 0
    staff_unchanged: int = 0
    warnings: tuple[RosterProblem, ...] = ()

    def text(self) -> str:
        """The Chinese one-line summary the CLI prints."""
        return (
            f"新增门店 {self.dealers_created}，更新门店 {self.dealers_updated}，门店未变化 {self.dealers_unchanged}；"
            f"新增成员 {self.staff_created}，更新成员 {self.staff_updated}，成员未变化 {self.staff_unchanged}"
        )


def parse_roster(path: str | Path) -> Roster:
    """Read one roster file; raises :class:`RosterError` listing every problem."""
    return parse_rosters([path])


def parse_rosters(paths: Iterable[str | Path]) -> Roster:
    """Read several roster files as one import; raises :class:`RosterError` listing every problem."""
    rosters: list[Roster] = []
    problems: list[RosterProblem] = []
    for path in paths:
        roster, found = _read_file(Path(path))
        rosters.append(roster)
        problems.extend(found)
    combined, duplicates = combine(rosters)
    problems.extend(duplicates)
    if problems:
        raise RosterError(problems)
    return combined


def _read_file(path: Path) -> tuple[Roster, list[RosterProblem]]:
    name = str(path)
    start = Where(name, 1)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        return Roster(files=(name,)), [RosterProblem(start, "不支持的文件类型：只能导入 .yaml、.yml 或 .csv")]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Roster(files=(name,)), [RosterProblem(start, f"无法读取文件：{exc.strerror or exc}")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        message = "文件不是 UTF-8 编码（Excel 请另存为“CSV UTF-8（逗号分隔）”）"
        return Roster(files=(name,)), [RosterProblem(start, message)]
    if not text.strip():
        return Roster(files=(name,)), [RosterProblem(start, "文件为空")]
    if suffix == ".csv":
        return read_csv_roster(text, name)
    return read_yaml_roster(text, name)


async def import_roster(
    session: AsyncSession, corp_id: str, roster: Roster, *, actor: str, strict: bool = False
) -> ImportSummary:
    """Upsert ``roster`` into ``corp_id`` in the session's transaction (the caller commits or rolls back) as the
    user ``actor`` (``ActorRefused`` unless they may import), and audit it.

    Raises :class:`RosterError` before writing anything when a staff member names a dealer that is neither in
    the roster nor stored, or (``strict``) when a userid is not a known WeCom member."""
    await require_actor(session, actor, Permission.ROSTER_IMPORT)
    summary, before, after = await _upsert(session, corp_id, roster, strict=strict)
    detail = {
        "files": [Path(name).name for name in roster.files],
        "dealers": {"created": summary.dealers_created, "updated": summary.dealers_updated},
        "staff": {"created": summary.staff_created, "updated": summary.staff_updated},
    }
    await audit.record_change(
        session, corp_id, "roster.imported", "roster", corp_id, actor=actor, before=before, after=after, detail=detail
    )
    return summary


def _rows_fields(dealers: dict[str, Dealer], members: dict[str, Staff]) -> dict[str, Any]:
    """The touched rows as the audit digests them (keyed by dealer code and userid)."""
    return {
        "dealers": {code: row.model_dump() for code, row in sorted(dealers.items())},
        "staff": {userid: row.model_dump() for userid, row in sorted(members.items())},
    }


async def _upsert(
    session: AsyncSession, corp_id: str, roster: Roster, *, strict: bool
) -> tuple[ImportSummary, dict[str, Any], dict[str, Any]]:
    """The upsert of :func:`import_roster`: its summary and the touched rows' fields before and after."""
    dealer_codes = [d.code for d in roster.dealers]
    referenced = sorted({s.dealer_code for s in roster.staff if s.dealer_code} - set(dealer_codes))
    dealers = {d.code: d for d in await _load(session, Dealer, Dealer.code, corp_id, [*dealer_codes, *referenced])}
    members = {
        s.userid: s for s in await _load(session, Staff, Staff.userid, corp_id, [s.userid for s in roster.staff])
    }
    warnings = _check_staff(roster, set(referenced), dealers, members, strict=strict)
    before = _rows_fields(dealers, members)
    await ensure_corp(session, corp_id)
    counts = {"dealers": [0, 0, 0], "staff": [0, 0, 0]}  # created, updated, unchanged
    for dealer_entry in roster.dealers:
        row = dealers.get(dealer_entry.code)
        if row is None:
            row = Dealer(corp_id=corp_id, code=dealer_entry.code, **dealer_entry.values)
            session.add(row)
            dealers[dealer_entry.code] = row
            counts["dealers"][0] += 1
        else:
            counts["dealers"][1 if assign(row, dealer_entry.values) else 2] += 1
    await session.flush()
    for entry in roster.staff:
        values: dict[str, Any] = dict(entry.values)
        if entry.dealer_code:
            values["dealer_id"] = dealers[entry.dealer_code].id
        member = members.get(entry.userid)
        if member is None:
            member = Staff(corp_id=corp_id, userid=entry.userid, extra={ROSTER_UNMATCHED: True}, **values)
            session.add(member)
            members[entry.userid] = member
            counts["staff"][0] += 1
        else:
            counts["staff"][1 if assign(member, values) else 2] += 1
    await session.flush()
    (dealers_created, dealers_updated, dealers_unchanged), (staff_created, staff_updated, staff_unchanged) = (
        counts["dealers"],
        counts["staff"],
    )
    summary = ImportSummary(
        dealers_created,
        dealers_updated,
        dealers_unchanged,
        staff_created,
        staff_updated,
        staff_unchanged,
        tuple(warnings),
    )
    return summary, before, _rows_fields(dealers, members)


def _check_staff(
    roster: Roster, referenced: set[str], dealers: dict[str, Dealer], members: dict[str, Staff], *, strict: bool
) -> list[RosterProblem]:
    """What needs the database: each member's dealer exists (in the roster or stored), each userid is a known
    WeCom member (a warning, an error with ``strict``). Raises :class:`RosterError`; returns the warnings."""
    problems: list[RosterProblem] = []
    warnings: list[RosterProblem] = []
    for entry in roster.staff:
        if entry.dealer_code in referenced and entry.dealer_code not in dealers:
            where = entry.dealer_where or entry.where
            problems.append(
                RosterProblem(where, f"门店 {entry.dealer_code} 不存在：本次导入和数据库中都没有这个门店代码")
            )
        stored = members.get(entry.userid)
        if stored is None or (stored.extra or {}).get(ROSTER_UNMATCHED):
            message = f"企业微信中未找到成员 {entry.userid}（请检查账号，或先运行 lianyi sync 同步通讯录）"
            (problems if strict else warnings).append(RosterProblem(entry.where, message, warning=not strict))
    if problems:
        raise RosterError(problems)
    return warnings


async def _load(session: AsyncSession, model: Any, key: Any, corp_id: str, values: Sequence[str]) -> list[Any]:
    """Rows of ``model`` in ``corp_id`` whose ``key`` is one of ``values`` (looked up in chunks)."""
    rows: list[Any] = []
    unique = sorted(set(values))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        result = await session.exec(select(model).where(model.corp_id == corp_id, col(key).in_(chunk)))
        rows.extend(result.all())
    return rows
