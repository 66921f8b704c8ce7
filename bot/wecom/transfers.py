"""Customer transfer (在职继承) for :class:`bot.wecom.client.WeComClient`, as a mixin.

``transfer_customer`` only starts a transfer: the call answers errcode 0 with one errcode per customer (0 =
the takeover follows in 24 h unless the customer refuses; 84061 no relation with the handover member, 40128
transferred twice in 90 days, 40129 a transfer is in progress, 40096 bad external userid). ``transfer_result``
reports each customer's status (1 done, 2 waiting, 3 refused, 4 takeover at its customer limit) and
``takeover_time``. Each method is one API call through :meth:`WeComClient.call`; paging is the caller's.
"""

from __future__ import annotations

from typing import Any

from bot.wecom.endpoints import EXTERNAL, CallsWeCom

MAX_CUSTOMERS_PER_CALL = 100


class TransferApi:
    async def transfer_customer(
        self: CallsWeCom,
        handover_userid: str,
        takeover_userid: str,
        external_userid: list[str],
        transfer_success_msg: str | None = None,
    ) -> dict[str, Any]:
        """Start transferring up to 100 customers from ``handover_userid`` to ``takeover_userid``;
        ``transfer_success_msg`` (≤200 characters) is what the customer reads; None = WeCom's default."""
        if not 1 <= len(external_userid) <= MAX_CUSTOMERS_PER_CALL:
            raise ValueError(f"一次最多转接 {MAX_CUSTOMERS_PER_CALL} 位客户（当前 {len(external_userid)} 位）")
        body: dict[str, Any] = {
            "handover_userid": handover_userid,
            "takeover_userid": takeover_userid,
            "external_userid": external_userid,
        }
        if transfer_success_msg:
            body["transfer_success_msg"] = transfer_success_msg
        return await self.call("POST", f"{EXTERNAL}/transfer_customer", json=body)

    async def transfer_result(
        self: CallsWeCom, handover_userid: str, takeover_userid: str, cursor: str = ""
    ) -> dict[str, Any]:
        """One page of the pair's transfers: ``customer[]`` with status and takeover_time; ``next_cursor``."""
        body = {"handover_userid": handover_userid, "takeover_userid": takeover_userid, "cursor": cursor}
        return await self.call("POST", f"{EXTERNAL}/transfer_result", json=body)
