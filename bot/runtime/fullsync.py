"""``lianyi sync``: the full initial sync of one corp through the WeCom API.

Steps, in order (each step's rows go through the same scrm.sync services as callbacks do):

1. ``tags``     get_corp_tag_list → :func:`scrm.sync.tags.apply_corp_tag_list`
2. ``staff``    get_follow_user_list (who has 客户联系 permission) + user/get each → :mod:`scrm.sync.staff`
3. ``contacts`` externalcontact/batch/get_by_user, ≤100 userids per call, paged by cursor →
                :func:`scrm.sync.contacts.apply_contact_detail` per (contact, follow user)
4. ``groups``   groupchat/list paged, groupchat/get each → :func:`scrm.sync.groups.apply_group_detail`

Resumable: progress lives in ``sync_checkpoints`` (step, scope, cursor, done) and is written in the same
transaction as the rows it covers, so an interrupted run continues after the last committed page. Scopes:
``""`` for a whole step, ``"<first>..<last>"`` for one batch of ≤100 userids of the contacts step. When a
run finds every step done it starts a new pass (so a second ``lianyi sync`` re-reads WeCom); ``restart``
forces a new pass. Idempotent: the services only write values that differ, so a pass over unchanged WeCom
data changes no row (only the checkpoints' ``updated_at``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from rich.progress import Progress, TaskID
from sqlmodel import col, select

from bot.wecom.errors import FatalError, RateLimitedError, RetryableError
from scrm.db import SessionFactory, write_transaction
from scrm.models import Staff, SyncCheckpoint
from scrm.rows import assign, get_or_create
from scrm.sync import contacts, groups, staff, tags

log = logging.getLogger(__name__)

BATCH_USERIDS = 100  # batch/get_by_user: at most 100 userids per call
BATCH_LIMIT = 100  # … and at most 100 results per page
GROUP_PAGE = 1000  # groupchat/list: at most 1000 per page
USERS_PER_TX = 50
CALL_ATTEMPTS = 4
STEPS = ("tags", "staff", "contacts", "groups")
STEP_LABELS = {"tags": "企业标签", "staff": "成员", "contacts": "客户", "groups": "客户群"}

T = TypeVar("T")


class SyncClient(Protocol):
    """The WeCom calls the full sync needs (``bot.wecom.client.WeComClient`` provides them)."""

    async def get_corp_tag_list(self) -> dict[str, Any]: ...
    async def get_follow_user_list(self) -> dict[str, Any]: ...
    async def get_user(self, userid: str) -> dict[str, Any]: ...
    async def batch_get_by_user(self, userid_list: list[str], cursor: str = "", limit: int = 100) -> dict[str, Any]: ...
    async def groupchat_list(self, cursor: str = "", limit: int = 1000, status_filter: int = 0) -> dict[str, Any]: ...
    async def groupchat_get(self, chat_id: str, need_name: int = 1) -> dict[str, Any]: ...


@dataclass
class SyncReport:
    """What one run did: items applied per step, items WeCom refused (skipped), steps already done."""

    applied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEPS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEPS, 0))
    resumed: list[str] = field(default_factory=list)


class _Bar:
    """One rich progress task, or nothing when no Progress is given (tests, non-TTY)."""

    def __init__(self, progress: Progress | None, label: str, total: float | None) -> None:
        self._progress = progress
        self._task: TaskID | None = progress.add_task(label, total=total) if progress else None

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def finish(self) -> None:
        if self._progress is not None and self._task is not None:
            done = self._progress.tasks[self._task].completed
            self._progress.update(self._task, total=max(done, 1), completed=max(done, 1))


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class FullSync:
    steps: tuple[str, ...] = STEPS  # the checkpoint steps this sync owns (a reconciliation owns others)

    def __init__(
        self,
        client: SyncClient,
        sessions: SessionFactory,
        corp_id: str,
        *,
        progress: Progress | None = None,
        restart: bool = False,
        backoff: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.corp_id = corp_id
        self.progress = progress
        self.restart = restart
        self._backoff = backoff
        self.report = SyncReport()
        self._checkpoints: dict[tuple[str, str], SyncCheckpoint] = {}

    async def run(self) -> SyncReport:
        await self._load_checkpoints()
        for step, run_step in (
            ("tags", self._sync_tags),
            ("staff", self._sync_staff),
            ("contacts", self._sync_contacts),
            ("groups", self._sync_groups),
        ):
            if self._done(step):
                self.report.resumed.append(step)
                _Bar(self.progress, f"{STEP_LABELS[step]}（已完成，跳过）", 1).advance()
                continue
            await run_step()
            log.info(
                "full sync step finished",
                extra={"step": step, "applied": self.report.applied[step], "skipped": self.report.skipped[step]},
            )
        return self.report

    # ---- checkpoints ------------------------------------------------------------------------------

    async def _load_checkpoints(self) -> None:
        async with write_transaction(self.sessions) as session:
            query = select(SyncCheckpoint).where(
                SyncCheckpoint.corp_id == self.corp_id, col(SyncCheckpoint.step).in_(self.steps)
            )
            rows = (await session.exec(query)).all()
            finished = all(any(r.step == s and r.scope == "" and r.done for r in rows) for s in self.steps)
            if self.restart or finished:
                for row in rows:
                    assign(row, {"done": False, "cursor": ""})
        self._checkpoints = {(r.step, r.scope): r for r in rows}

    def _done(self, step: str, scope: str = "") -> bool:
        row = self._checkpoints.get((step, scope))
        return row is not None and row.done

    def _cursor(self, step: str, scope: str = "") -> str:
        row = self._checkpoints.get((step, scope))
        return row.cursor if row is not None else ""

    async def _save(self, session: Any, step: str, scope: str = "", *, cursor: str = "", done: bool = False) -> None:
        keys = {"corp_id": self.corp_id, "step": step, "scope": scope}
        row, _ = await get_or_create(session, SyncCheckpoint, keys, {"cursor": cursor, "done": done})
        assign(row, {"cursor": cursor, "done": done})
        self._checkpoints[(step, scope)] = row

    # ---- WeCom calls with a little patience -------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Retry busy/limited answers a few times (WeCom's retry_after when it gives one)."""
        for attempt in range(1, CALL_ATTEMPTS + 1):
            try:
                return await fn()
            except (RetryableError, RateLimitedError) as exc:
                if attempt == CALL_ATTEMPTS:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else float(2**attempt)
                log.warning("WeCom busy during full sync, retrying", extra={"call": what, "wait": wait})
                await self._backoff(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- steps ------------------------------------------------------------------------------------

    async def _sync_tags(self) -> None:
        bar = _Bar(self.progress, STEP_LABELS["tags"], 1)
        body = await self._call("get_corp_tag_list", self.client.get_corp_tag_list)
        tag_groups: list[dict[str, Any]] = list(body.get("tag_group") or [])
        async with write_transaction(self.sessions) as session:
            await tags.apply_corp_tag_list(session, self.corp_id, tag_groups)
            await self._save(session, "tags", done=True)
        self.report.applied["tags"] = sum(len(g.get("tag") or []) for g in tag_groups)
        bar.advance()
        bar.finish()

    async def _sync_staff(self) -> None:
        body = await self._call("get_follow_user_list", self.client.get_follow_user_list)
        userids = sorted({str(u) for u in body.get("follow_user") or [] if u})
        bar = _Bar(self.progress, STEP_LABELS["staff"], len(userids))
        async with write_transaction(self.sessions) as session:
            await staff.apply_follow_user_list(session, self.corp_id, userids)
        after = self._cursor("staff")
        todo = [u for u in userids if u > after]
        bar.advance(len(userids) - len(todo))
        for batch in chunks(todo, USERS_PER_TX):
            users: list[dict[str, Any]] = []
            for userid in batch:
                try:
                    users.append(await self._call("user/get", functools.partial(self.client.get_user, userid)))
                except FatalError as exc:
                    self.report.skipped["staff"] += 1
                    log.warning("user/get refused, member skipped", extra={"userid": userid, "error": str(exc)})
            async with write_transaction(self.sessions) as session:
                for user in users:
                    await staff.apply_user(session, self.corp_id, user)
                await self._save(session, "staff", cursor=batch[-1])
            self.report.applied["staff"] += len(users)
            bar.advance(len(batch))
        async with write_transaction(self.sessions) as session:
            await self._save(session, "staff", done=True)
        bar.finish()

    async def _sync_contacts(self) -> None:
        async with self.sessions() as session:
            result = await session.exec(
                select(Staff.userid).where(Staff.corp_id == self.corp_id, col(Staff.has_contact_permission).is_(True))
            )
            userids = sorted(result.all())
        bar = _Bar(self.progress, STEP_LABELS["contacts"], len(userids))
        for chunk in chunks(userids, BATCH_USERIDS):
            scope = f"{chunk[0]}..{chunk[-1]}"
            if self._done("contacts", scope):
                bar.advance(len(chunk))
                continue
            await self._sync_contact_chunk(chunk, scope)
            bar.advance(len(chunk))
        async with write_transaction(self.sessions) as session:
            await self._save(session, "contacts", done=True)
        bar.finish()

    async def _sync_contact_chunk(self, chunk: list[str], scope: str) -> None:
        cursor = self._cursor("contacts", scope)
        while True:
            fetch = functools.partial(self.client.batch_get_by_user, chunk, cursor, BATCH_LIMIT)
            body = await self._call("batch/get_by_user", fetch)
            entries = [e for e in body.get("external_contact_list") or [] if isinstance(e, dict)]
            cursor = str(body.get("next_cursor") or "")
            async with write_transaction(self.sessions) as session:
                for entry in entries:
                    await contacts.apply_contact_detail(session, self.corp_id, entry)
                await self._save(session, "contacts", scope, cursor=cursor, done=not cursor)
            self.report.applied["contacts"] += len(entries)
            if not cursor:
                return

    async def _sync_groups(self) -> None:
        bar = _Bar(self.progress, STEP_LABELS["groups"], None)
        cursor = self._cursor("groups")
        while True:
            body = await self._call(
                "groupchat/list", functools.partial(self.client.groupchat_list, cursor=cursor, limit=GROUP_PAGE)
            )
            chat_ids = [str(g["chat_id"]) for g in body.get("group_chat_list") or [] if g.get("chat_id")]
            for chat_id in chat_ids:
                await self._sync_group(chat_id)
                bar.advance()
            cursor = str(body.get("next_cursor") or "")
            async with write_transaction(self.sessions) as session:
                await self._save(session, "groups", cursor=cursor, done=not cursor)
            if not cursor:
                break
        bar.finish()

    async def _sync_group(self, chat_id: str) -> None:
        try:
            body = await self._call("groupchat/get", functools.partial(self.client.groupchat_get, chat_id, need_name=1))
        except FatalError as exc:  # dismissed between list and get, or no permission
            self.report.skipped["groups"] += 1
            log.warning("groupchat/get refused, group skipped", extra={"chat_id": chat_id, "error": str(exc)})
            return
        async with write_transaction(self.sessions) as session:
            await groups.apply_group_detail(session, self.corp_id, dict(body.get("group_chat") or {}))
        self.report.applied["groups"] += 1
