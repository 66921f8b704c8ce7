"""在职继承 APIs: externalcontact/transfer_customer and externalcontact/transfer_result.

transfer_customer answers errcode 0 for the call and one errcode per customer: 0 (the transfer started; the
takeover follows after ``transfer_rules.delay_seconds``), 40096 (unknown external userid), 84061 (the handover
member has no relation with the customer), 40129 (a transfer of this customer is in progress), 40128 (the
customer was transferred twice in the last 90 days). transfer_result lists the transfers from one handover to
one takeover member with status 1 done, 2 waiting, 3 refused, 4 takeover at its customer limit, and
``takeover_time`` (the future takeover while waiting). See :mod:`bot.emulator.actions_transfers`.
"""

from __future__ import annotations

from typing import Any

from bot.emulator.actions_transfers import TRANSFER_WINDOW, TRANSFERS_PER_WINDOW
from bot.emulator.routes import ApiCall, ApiError, page, route

MAX_CUSTOMERS = 100
MAX_SUCCESS_MSG = 200  # characters
RESULT_PAGE = 1000
ERR_BAD_USERID = 40003
ERR_BAD_EXTERNAL = 40096
ERR_NO_RELATION = 84061
ERR_TOO_OFTEN = 40128
ERR_IN_PROGRESS = 40129


def _member(call: ApiCall, name: str) -> str:
    userid = call.text(name)
    member = call.state.staff.get(userid)
    if member is None or not member.has_contact_permission:
        raise ApiError(ERR_BAD_USERID, f"{name} {userid} is not a member with customer contact")
    return userid


@route("externalcontact/transfer_customer", "POST", contact_api=True)
def transfer_customer(call: ApiCall) -> dict[str, Any]:
    state = call.state
    handover, takeover = _member(call, "handover_userid"), _member(call, "takeover_userid")
    if handover == takeover:
        raise ApiError(40058, "handover_userid and takeover_userid must differ")
    customers = call.str_list("external_userid")
    if not customers or len(customers) > MAX_CUSTOMERS:
        raise ApiError(40058, f"external_userid must list 1 to {MAX_CUSTOMERS} customers")
    message = call.text("transfer_success_msg", required=False)
    if len(message) > MAX_SUCCESS_MSG:
        raise ApiError(40058, f"transfer_success_msg exceeds {MAX_SUCCESS_MSG} characters")
    state.settle_due_transfers()
    since = state.now() - TRANSFER_WINDOW
    results = []
    for ext in customers:
        if ext not in state.contacts:
            errcode = ERR_BAD_EXTERNAL
        elif (ext, handover) not in state.follows:
            errcode = ERR_NO_RELATION
        elif state.transfer_in_progress(ext) is not None:
            errcode = ERR_IN_PROGRESS
        elif len(state.accepted_transfers(ext, since)) >= TRANSFERS_PER_WINDOW:
            errcode = ERR_TOO_OFTEN
        else:
            state.start_transfer(handover, takeover, ext, message)
            errcode = 0
        results.append({"external_userid": ext, "errcode": errcode})
    return {"customer": results}


@route("externalcontact/transfer_result", "POST", contact_api=True)
def transfer_result(call: ApiCall) -> dict[str, Any]:
    state = call.state
    handover, takeover = call.text("handover_userid"), call.text("takeover_userid")
    state.settle_due_transfers()
    rows = [
        {"external_userid": t.external_userid, "status": t.status, "takeover_time": t.takeover_time}
        for t in state.transfers
        if t.handover_userid == handover and t.takeover_userid == takeover
    ]
    items, next_cursor = page(rows, call.text("cursor", required=False), RESULT_PAGE)
    return {"customer": items, "next_cursor": next_cursor}
