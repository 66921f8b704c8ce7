"""Company group sends (企业群发) for :class:`bot.wecom.client.WeComClient`, as a mixin.

``add_msg_template`` only creates a task that the sender confirms in the WeCom client; the read-back APIs
report what happened per sender (task status 0 unsent / 2 sent) and per recipient (0 unsent, 1 sent,
2 not a friend, 3 quota hit). Every method is one API call through :meth:`WeComClient.call` (its per-API
rate limit and typed errors); paging is the caller's.
"""

from __future__ import annotations

from typing import Any

from bot.wecom.endpoints import EXTERNAL, CallsWeCom


def _paging(body: dict[str, Any], cursor: str, limit: int | None) -> dict[str, Any]:
    if cursor:
        body["cursor"] = cursor
    if limit is not None:
        body["limit"] = limit
    return body


class GroupMsgApi:
    async def add_msg_template(self: CallsWeCom, body: dict[str, Any]) -> dict[str, Any]:
        """Create a group-send task: ``{chat_type, sender, external_userid | chat_id_list, text, attachments}``.

        Not idempotent at WeCom: calling it twice creates two tasks (see bot.outbox.executors).
        """
        return await self.call("POST", f"{EXTERNAL}/add_msg_template", json=body)

    async def get_groupmsg_list_v2(
        self: CallsWeCom,
        *,
        chat_type: str,
        start_time: int,
        end_time: int,
        creator: str | None = None,
        filter_type: int = 2,
        cursor: str = "",
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Group sends created in ``[start_time, end_time]`` (at most one month apart), ``group_msg_list``."""
        body: dict[str, Any] = {
            "chat_type": chat_type,
            "start_time": start_time,
            "end_time": end_time,
            "filter_type": filter_type,
        }
        if creator:
            body["creator"] = creator
        return await self.call("POST", f"{EXTERNAL}/get_groupmsg_list_v2", json=_paging(body, cursor, limit))

    async def get_groupmsg_task(
        self: CallsWeCom, msgid: str, *, cursor: str = "", limit: int | None = None
    ) -> dict[str, Any]:
        """The senders of ``msgid`` and whether each has sent it (``task_list``)."""
        body = _paging({"msgid": msgid}, cursor, limit)
        return await self.call("POST", f"{EXTERNAL}/get_groupmsg_task", json=body)

    async def get_groupmsg_send_result(
        self: CallsWeCom, msgid: str, userid: str, *, cursor: str = "", limit: int | None = None
    ) -> dict[str, Any]:
        """What ``userid``'s part of ``msgid`` did per customer or group (``send_list``)."""
        body = _paging({"msgid": msgid, "userid": userid}, cursor, limit)
        return await self.call("POST", f"{EXTERNAL}/get_groupmsg_send_result", json=body)

    async def remind_groupmsg_send(self: CallsWeCom, msgid: str) -> dict[str, Any]:
        """Remind the senders who have not sent ``msgid`` yet (at most three times in 24 h)."""
        return await self.call("POST", f"{EXTERNAL}/remind_groupmsg_send", json={"msgid": msgid})

    async def cancel_groupmsg_send(self: CallsWeCom, msgid: str) -> dict[str, Any]:
        """Stop ``msgid``: tasks not sent yet are cancelled; what was sent stays sent."""
        return await self.call("POST", f"{EXTERNAL}/cancel_groupmsg_send", json={"msgid": msgid})
