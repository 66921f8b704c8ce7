"""World actions on company group sends: a sender confirming their task in the WeCom client.

``add_msg_template`` only creates tasks. With ``groupmsg_auto_confirm`` (the default) every sender
confirms at once; with it off, a test decides when with :meth:`GroupMsgActions.confirm_groupmsg`.
Confirming delivers to each recipient that is still reachable and within its group-send quota, and
records every delivery in ``counters.group_sends``. No callback is sent (WeCom sends none either).
"""

from __future__ import annotations

from bot.emulator.base import StateData, WorldError
from bot.emulator.counters import GroupSendDelivery
from bot.emulator.groupmsg_records import (
    RECIPIENT_NOT_FRIEND,
    RECIPIENT_QUOTA_HIT,
    RECIPIENT_SENT,
    TASK_SENT,
    TASK_UNSENT,
    GroupMsg,
    GroupMsgRecipient,
)


class GroupMsgActions(StateData):
    def confirm_groupmsg(self, msgid: str, userid: str) -> list[GroupMsgRecipient]:
        """``userid`` taps 发送 on the group-send task ``msgid``; returns its recipients with their status."""
        msg = self.group_msgs.get(msgid)
        if msg is None:
            raise WorldError(f"no group send {msgid!r}")
        task = msg.tasks.get(userid)
        if task is None:
            raise WorldError(f"{userid} has no task in group send {msgid}")
        if task.cancelled:
            raise WorldError(f"group send {msgid} was cancelled")
        if task.status != TASK_UNSENT:
            raise WorldError(f"{userid} already sent group send {msgid}")
        now = self.now_int()
        task.status, task.send_time = TASK_SENT, now
        recipients = msg.recipients_of(userid)
        for recipient in recipients:
            recipient.send_time = now
            if not self._reachable(msg, recipient):
                recipient.status = RECIPIENT_NOT_FRIEND
            elif not self.groupmsg_quota.admit(recipient.recipient, self.now()):
                recipient.status = RECIPIENT_QUOTA_HIT
            else:
                recipient.status = RECIPIENT_SENT
                self.counters.group_sends.append(
                    GroupSendDelivery(
                        msgid=msg.msgid,
                        sender=userid,
                        recipient=recipient.recipient,
                        chat_type=msg.chat_type,
                        text=str((msg.text or {}).get("content", "")),
                        attachments=list(msg.attachments),
                        at=self.now(),
                    )
                )
        return recipients

    def _reachable(self, msg: GroupMsg, recipient: GroupMsgRecipient) -> bool:
        if msg.chat_type == "group":
            group = self.groups.get(recipient.recipient)
            return group is not None and not group.dismissed and group.owner == recipient.userid
        return (recipient.recipient, recipient.userid) in self.follows
