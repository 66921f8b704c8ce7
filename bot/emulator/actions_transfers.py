"""World actions on customer transfers (在职继承): accepting a transfer, and the takeover 24 h later.

``externalcontact/transfer_customer`` only starts a transfer (status 2, waiting). When ``takeover_time`` has
come (``transfer_rules.delay_seconds`` after the call, on the state's clock), the transfer settles:

- the customer refuses (listed in ``transfer_rules.refusing_customers``, or drawn at ``refusal_rate`` with
  the state's seeded rng; or earlier, by :meth:`TransferActions.refuse_transfer`): status 3 and a
  ``transfer_fail`` callback with FailReason ``customer_refused``; the customer stays with the handover;
- the takeover member is at ``transfer_rules.customer_limit``: status 4 and ``transfer_fail`` with
  ``customer_limit_exceed``;
- otherwise status 1: the follow relation (remark, tags, state) moves to the takeover member, and WeCom's
  relation callbacks follow: ``add_external_contact`` for the takeover member and ``del_external_contact``
  with Source ``DELETE_BY_TRANSFER`` for the handover member.

Settling happens when the clock is read through :meth:`TransferActions.settle_due_transfers` (the
transfer_result API does it too). The callbacks wait in ``transfer_callbacks`` until a test or the
scenario runner takes them with :meth:`TransferActions.settle_transfers` and sends them.
"""

from __future__ import annotations

from dataclasses import replace

from bot.emulator.base import Fields, StateData, WorldError
from bot.emulator.records import (
    TRANSFER_DONE,
    TRANSFER_LIMIT,
    TRANSFER_REFUSED,
    TRANSFER_WAITING,
    CustomerTransfer,
)

EVENT = "change_external_contact"
TRANSFER_WINDOW = 90 * 86_400  # seconds: a customer can be transferred at most twice in it
TRANSFERS_PER_WINDOW = 2


class TransferActions(StateData):
    def accepted_transfers(self, external_userid: str, since: float) -> list[CustomerTransfer]:
        return [t for t in self.transfers if t.external_userid == external_userid and t.requested_at > since]

    def transfer_in_progress(self, external_userid: str) -> CustomerTransfer | None:
        return next(
            (t for t in self.transfers if t.external_userid == external_userid and t.status == TRANSFER_WAITING),
            None,
        )

    def start_transfer(self, handover: str, takeover: str, external_userid: str, msg: str) -> CustomerTransfer:
        """Record an accepted transfer (the API has checked it); it settles ``delay_seconds`` from now."""
        now = self.now()
        transfer = CustomerTransfer(
            handover_userid=handover,
            takeover_userid=takeover,
            external_userid=external_userid,
            requested_at=now,
            takeover_time=int(now + self.transfer_rules.delay_seconds),
            success_msg=msg,
        )
        self.transfers.append(transfer)
        self.counters.transfers[external_userid] += 1
        return transfer

    def refuse_transfer(self, external_userid: str) -> Fields:
        """The customer taps 拒绝 on the transfer notice before the takeover (transfer_fail, customer_refused)."""
        transfer = self.transfer_in_progress(external_userid)
        if transfer is None:
            raise WorldError(f"no transfer of {external_userid!r} is waiting")
        return self._fail(transfer, TRANSFER_REFUSED, "customer_refused")

    def settle_due_transfers(self) -> int:
        """Settle every waiting transfer whose takeover time has come; their callbacks are queued."""
        now = self.now()
        settled = 0
        for transfer in self.transfers:
            if transfer.status != TRANSFER_WAITING or transfer.takeover_time > now:
                continue
            self.transfer_callbacks.extend(self._settle(transfer))
            settled += 1
        return settled

    def settle_transfers(self) -> list[Fields]:
        """Settle what is due and hand out every queued transfer callback (each once), oldest first."""
        self.settle_due_transfers()
        callbacks, self.transfer_callbacks = self.transfer_callbacks, []
        return callbacks

    def _settle(self, transfer: CustomerTransfer) -> list[Fields]:
        rules = self.transfer_rules
        ext = transfer.external_userid
        refuses = ext in rules.refusing_customers or (rules.refusal_rate > 0 and self.rng.random() < rules.refusal_rate)
        if refuses:
            return [self._fail(transfer, TRANSFER_REFUSED, "customer_refused")]
        if rules.customer_limit is not None and len(self.follows_of_staff(transfer.takeover_userid)) >= (
            rules.customer_limit
        ):
            return [self._fail(transfer, TRANSFER_LIMIT, "customer_limit_exceed")]
        transfer.status = TRANSFER_DONE
        callbacks: list[Fields] = []
        old = self.follows.get((ext, transfer.handover_userid))
        if (ext, transfer.takeover_userid) not in self.follows:
            if old is None:
                raise WorldError(f"{transfer.handover_userid} lost {ext} before the takeover")
            moved = replace(
                old,
                userid=transfer.takeover_userid,
                createtime=transfer.takeover_time,
                tag_ids=list(old.tag_ids),
                remark_mobiles=list(old.remark_mobiles),
                oper_userid=transfer.takeover_userid,
            )
            self.put_follow(moved)
            callbacks.append(
                self.event_fields(EVENT, "add_external_contact", UserID=transfer.takeover_userid, ExternalUserID=ext)
            )
        if old is not None:
            self.drop_follow(transfer.handover_userid, ext)
            callbacks.append(
                self.event_fields(
                    EVENT,
                    "del_external_contact",
                    UserID=transfer.handover_userid,
                    ExternalUserID=ext,
                    Source="DELETE_BY_TRANSFER",
                )
            )
        return callbacks

    def _fail(self, transfer: CustomerTransfer, status: int, reason: str) -> Fields:
        transfer.status = status
        transfer.takeover_time = self.now_int()
        return self.event_fields(
            EVENT,
            "transfer_fail",
            UserID=transfer.takeover_userid,
            ExternalUserID=transfer.external_userid,
            FailReason=reason,
        )
