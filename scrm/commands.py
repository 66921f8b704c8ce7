"""Outbound commands: the contract between the domain (scrm) and the WeCom-facing runtime (bot).

A service appends a command with :func:`enqueue` inside the transaction that changes state; the outbox
dispatcher in ``bot`` executes it later. Commands are idempotent by ``idempotency_key``: enqueuing the same
key twice keeps the first row, so a replayed event cannot create a second side effect.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.db_types import utcnow
from scrm.models import CommandStatus, OutboxCommand


class CommandKind(StrEnum):
    """Every outbound action. Payload fields are documented per kind."""

    # {"welcome_code", "text", "attachments": [...], "external_userid", "userid"}; deadline = event + 20 s
    SEND_WELCOME = "send_welcome"
    # {"external_userid"}: externalcontact/get, then scrm.sync.contacts.apply_contact_detail
    FETCH_CONTACT = "fetch_contact"
    # {"chat_id"}: groupchat/get, then scrm.sync.groups.apply_group_detail
    FETCH_GROUP = "fetch_group"
    # {}: get_corp_tag_list, then scrm.sync.tags.apply_corp_tag_list
    REFRESH_CORP_TAGS = "refresh_corp_tags"
    # {"userid", "external_userid", "add_tag": [...], "remove_tag": [...]}
    MARK_TAG = "mark_tag"
    # {"touser": userid, "msgtype": "text"|"textcard"|"markdown", "text"|"textcard"|"markdown": {...}}
    SEND_APP_MESSAGE = "send_app_message"
    # {"chat_type": "single"|"group", "sender": userid, "external_userid": [...] (single) | "chat_id_list": [...]
    #  (group), "text": {"content": ...}, "attachments": [...], "source": "sop"|"campaign", "ref": str}
    # creates a WeCom group-send task (企业群发) the sender confirms; result {"msgid", "fail_list"}
    ADD_MSG_TEMPLATE = "add_msg_template"
    # {"group_name", "tag": [{"name"}]}: get_corp_tag_list, then add_corp_tag for the names the group lacks
    # (into the existing group, or a new group of that name); the created tags are mirrored at once
    ADD_CORP_TAG = "add_corp_tag"
    # {"transfer_id", "handover_userid", "takeover_userid", "external_userid", "transfer_success_msg" (≤200
    #  chars or ""), "lead_url"}: externalcontact/transfer_customer (在职继承) for one customer, then
    # scrm.leads.transfers.apply_call_result; key = CustomerTransfer.command_key
    TRANSFER_CUSTOMER = "transfer_customer"
    # {"msgid", "sender"}: externalcontact/remind_groupmsg_send for a campaign batch's task; written in the
    # transaction that records the reminder (scrm.campaigns.tracking.reserve_reminder), key
    # campaign-remind:<batch id>:<n> (n = the batch's n-th reminder); deadline = written + 5 min (a late reminder
    # could fall into quiet hours: it expires instead)
    REMIND_GROUPMSG = "remind_groupmsg"
    # {"msgid", "sender"}: externalcontact/cancel_groupmsg_send for a cancelled campaign's batch; key
    # campaign-cancel:<batch id>; result {"nothing_to_cancel": true} when WeCom answers 40058 (every task of
    # the message was already sent or cancelled)
    CANCEL_GROUPMSG = "cancel_groupmsg"


async def enqueue(
    session: AsyncSession,
    *,
    corp_id: str,
    kind: CommandKind,
    key: str,
    payload: dict[str, Any],
    not_before: datetime | None = None,
    deadline: datetime | None = None,
) -> bool:
    """Append a command to the outbox in the caller's transaction.

    ``key`` must identify the side effect, not the attempt (e.g. ``welcome:<welcome_code>``). Returns
    False when a command with this key already exists (nothing is written then).
    """
    now = utcnow()
    values: dict[str, Any] = {
        "corp_id": corp_id,
        "kind": kind.value,
        "idempotency_key": key,
        "payload": payload,
        "status": CommandStatus.PENDING.value,
        "attempts": 0,
        "not_before": not_before or now,
        "deadline": deadline,
        "created_at": now,
        "updated_at": now,
    }
    conn = await session.connection()
    result = await conn.execute(_insert_ignoring_duplicates(conn.dialect.name), values)
    return bool(result.rowcount)


@functools.cache
def _insert_ignoring_duplicates(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (idempotency_key) DO NOTHING`` built once per dialect, values bound per call
    (building the expression per call cost a quarter of a contact-added handler's CPU)."""
    table = OutboxCommand.__table__  # type: ignore[attr-defined]
    columns = (
        "corp_id",
        "kind",
        "idempotency_key",
        "payload",
        "status",
        "attempts",
        "not_before",
        "deadline",
        "created_at",
        "updated_at",
    )
    values = {c: bindparam(c, type_=table.c[c].type) for c in columns}
    if dialect == "postgresql":
        return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    if dialect == "sqlite":
        return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    raise ValueError(f"unsupported database dialect {dialect!r} (SQLite and PostgreSQL only)")


def delay(seconds: float) -> datetime:
    """``not_before`` for a command that must wait (e.g. groupchat/get ~2 s after a change)."""
    return utcnow() + timedelta(seconds=seconds)
