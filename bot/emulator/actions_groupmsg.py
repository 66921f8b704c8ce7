"""World actions on company group sends: a sender confirming their task in the WeCom client.

``add_msg_template`` only creates tasks. With ``groupmsg_auto_confirm`` (the default) every sender
confirms at once; with it off, a test decides when with :meth:`GroupMsgActions.confirm_groupmsg`.
Confirming delivers to each recipient that is still reachable and within its group-send quota, and
records every delivery in ``counters.group_sends``. No callback is sent (WeCom sends none either).

For assertions over many sends, :meth:`GroupMsgActions.group_send_coverage` maps each recipient to the
messages that reach it (or will, once confirmed), and :meth:`GroupMsgActions.group_msgs_by_creator` lists the
messages per ``sender`` given to add_msg_template. Simulated senders who confirm on their own are in
:mod:`bot.emulator.group_owners`.
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

    def group_send_coverage(self, chat_type: str) -> dict[str, list[str]]:
        """Recipient (chat_id for ``group``, external_userid for ``single``) → msgids reaching it, oldest first.

        Every message of ``chat_type`` counts except the parts cancelled with cancel_groupmsg_send: a recipient
        is covered when its sender's task is sent or still waiting for confirmation, whatever the delivery
        status (not a friend and quota hit still count). "Each group covered exactly once" is
        ``all(len(msgids) == 1 for msgids in coverage.values())`` plus the expected keys.
        """
        coverage: dict[str, list[str]] = {}
        for msg in self.group_msgs.values():
            if msg.chat_type != chat_type:
                continue
            for recipient in msg.recipients:
                task = msg.tasks.get(recipient.userid)
                if task is not None and not task.cancelled:
                    coverage.setdefault(recipient.recipient, []).append(msg.msgid)
        return coverage

    def group_msgs_by_creator(self) -> dict[str, list[str]]:
        """Creator (the ``sender`` given to add_msg_template, "" when WeCom picked the senders) → every msgid
        they created, cancelled or not, oldest first."""
        created: dict[str, list[str]] = {}
        for msg in self.group_msgs.values():
            created.setdefault(msg.creator, []).append(msg.msgid)
        return created

    def _reachable(self, msg: GroupMsg, recipient: GroupMsgRecipient) -> bool:
        if msg.chat_type == "group":
            group = self.groups.get(recipient.recipient)
            return group is not None and not group.dismissed and group.owner == recipient.userid
        return (recipient.recipient, recipient.userid) in self.follows
