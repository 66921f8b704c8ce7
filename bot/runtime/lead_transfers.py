"""Following customer transfers (在职继承) until WeCom settles them: the leader's transfer_result poll.

A transfer WeCom accepted waits up to 24 h for the takeover. Every tick, the transfers whose next poll is
due (:func:`scrm.leads.transfers.due_polls`) are grouped by (handover, takeover) pair, one
``transfer_result`` listing is read per pair (every page), and each transfer gets its status through
:func:`scrm.leads.transfers.apply_transfer_status`. A transfer the listing does not mention is one WeCom
has no record of (e.g. 40129 answered for somebody else's transfer): it is settled as failed (status 5).
A pair whose listing fails is left for the next tick.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from bot.runtime.scheduler import TickSpec
from bot.wecom.client import WeComClient
from bot.wecom.errors import WeComError
from scrm.db import SessionFactory, write_transaction
from scrm.leads.transfers import RESULT_NO_RECORD, apply_transfer_status, due_polls
from scrm.models import CustomerTransfer

log = logging.getLogger(__name__)

POLL_BATCH = 200  # transfers looked at per tick
MAX_RESULT_PAGES = 50  # transfer_result pages of up to 1000 customers per pair
TRANSFER_POLL_SECONDS = 60.0


async def _statuses(client: WeComClient, handover: str, takeover: str) -> dict[str, tuple[int, int | None]]:
    """external_userid → (status, takeover_time) over every page of one pair's transfer_result."""
    found: dict[str, tuple[int, int | None]] = {}
    cursor = ""
    for _ in range(MAX_RESULT_PAGES):
        page = await client.transfer_result(handover, takeover, cursor)
        for item in page.get("customer") or []:
            takeover_time = item.get("takeover_time")
            found[str(item["external_userid"])] = (
                int(item["status"]),
                None if takeover_time is None else int(takeover_time),
            )
        cursor = str(page.get("next_cursor") or "")
        if not cursor:
            break
    return found


async def poll_transfers(session_factory: SessionFactory, client: WeComClient, corp_id: str, now: datetime) -> int:
    """Poll the due waiting transfers of ``corp_id``; returns how many were looked at and updated."""
    async with session_factory() as session:
        due = await due_polls(session, corp_id, now=now, limit=POLL_BATCH)
    pairs: dict[tuple[str, str], list[CustomerTransfer]] = defaultdict(list)
    for transfer in due:
        pairs[(transfer.handover_userid, transfer.takeover_userid)].append(transfer)
    updated = 0
    for (handover, takeover), transfers in pairs.items():
        try:
            statuses = await _statuses(client, handover, takeover)
        except WeComError as exc:
            log.warning(
                "transfer_result failed; polling again next tick",
                extra={"handover": handover, "takeover": takeover, "error": str(exc)},
            )
            continue
        async with write_transaction(session_factory, urgent=False) as session:
            for transfer in transfers:
                assert transfer.id is not None
                status, takeover_time = statuses.get(transfer.external_userid, (RESULT_NO_RECORD, None))
                try:
                    await apply_transfer_status(
                        session, transfer.id, status=status, takeover_time=takeover_time, now=now
                    )
                except ValueError as exc:  # a status this build does not know: ask again next time
                    log.warning("unknown transfer status", extra={"transfer_id": transfer.id, "error": str(exc)})
                    continue
                updated += 1
    return updated


def transfer_ticks(
    session_factory: SessionFactory, client: WeComClient, corp_id: str, *, every: float = TRANSFER_POLL_SECONDS
) -> list[TickSpec]:
    """The transfer poll every ``every`` seconds (each transfer itself is asked about every 30 minutes)."""

    async def poll(now: datetime) -> None:
        updated = await poll_transfers(session_factory, client, corp_id, now)
        if updated:
            log.info("customer transfers polled", extra={"count": updated})

    return [TickSpec("lead_transfers", every, poll)]
