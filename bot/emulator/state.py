"""The emulated WeCom corp: its data, its world actions, its counters, and a snapshot for comparisons.

Build one with :class:`EmulatorState` (or from a scenario, :func:`bot.emulator.scenario.build_state`),
serve it with :func:`bot.emulator.api.create_emulator_app`, and drive it with world actions — each returns
the plaintext callback fields WeCom would send, ready for :class:`bot.emulator.callbacks.CallbackDriver`:

=========================  ===========================================================================
contacts                   add_contact, half_add, edit_remark, mark_tags_in_client, staff_delete_contact,
                           contact_deletes_staff, transfer_fail
groups                     create_group, join_group, leave_group, rename_group, change_notice,
                           change_owner, dismiss_group
corp tags (admin console)  create_tag_group, create_tag, update_tag, delete_tag, shuffle_tags
group sends (client)       confirm_groupmsg (unless ``groupmsg_auto_confirm``)
微信客服 kf                 kf_customer_message, kf_servicer_message, kf_enter_session (set-up: add_kf_account)
在职继承 transfers          settle_transfers (takeover or refusal once due), refuse_transfer
=========================  ===========================================================================
"""

from __future__ import annotations

from typing import Any

from bot.emulator.actions_contacts import ContactActions
from bot.emulator.actions_groupmsg import GroupMsgActions
from bot.emulator.actions_groups import GroupActions
from bot.emulator.actions_kf import KfActions
from bot.emulator.actions_tags import TagActions
from bot.emulator.actions_transfers import TransferActions
from bot.emulator.base import Fields, WorldError, make_id
from bot.emulator.clock import Clock, ManualClock, SystemClock

__all__ = ["Clock", "EmulatorState", "Fields", "ManualClock", "SystemClock", "WorldError", "make_id"]


class EmulatorState(ContactActions, GroupActions, TagActions, GroupMsgActions, KfActions, TransferActions):
    """One emulated corp. ``clock`` is injectable; ``seed`` fixes fault draws and tag shuffles."""

    def invalidate_all_tokens(self) -> int:
        """WeCom invalidates tokens early: every issued token answers 40014 from now on."""
        return self.tokens.invalidate_all(self.now())

    def snapshot(self) -> dict[str, Any]:
        """A normalized, JSON-able view of the corp to compare with Lianyi's database.

        Times and welcome codes are left out; lists are sorted; deleted relations are absent (WeCom keeps
        none), dismissed groups are listed by id only.
        """
        follows: dict[str, dict[str, Any]] = {}
        for (ext, userid), follow in sorted(self.follows.items()):
            follows.setdefault(ext, {})[userid] = {
                "remark": follow.remark,
                "description": follow.description,
                "state": follow.state,
                "add_way": follow.add_way,
                "half": follow.half,
                "tags": sorted(follow.tag_ids),
            }
        groups = {
            chat_id: {
                "name": group.name,
                "owner": group.owner,
                "notice": group.notice,
                "member_version": group.member_version,
                "members": sorted(group.members),
                "customers": sorted(m for m, rec in group.members.items() if rec.type == 2),
                "admins": sorted(group.admins),
            }
            for chat_id, group in sorted(self.groups.items())
            if not group.dismissed
        }
        tag_groups = {
            group_id: {
                "name": group.name,
                "order": group.order,
                "strategy_id": group.strategy_id,
                "tags": {tag_id: {"name": tag.name, "order": tag.order} for tag_id, tag in sorted(group.tags.items())},
            }
            for group_id, group in sorted(self.tag_groups.items())
        }
        return {
            "corp_id": self.corp_id,
            "staff": {
                userid: {"name": s.name, "dealer": s.dealer_code, "contact_permission": s.has_contact_permission}
                for userid, s in sorted(self.staff.items())
            },
            "contacts": {
                ext: {"name": c.name, "type": c.type, "gender": c.gender, "unionid": c.unionid}
                for ext, c in sorted(self.contacts.items())
            },
            "follows": follows,
            "groups": groups,
            "dismissed_groups": sorted(chat_id for chat_id, g in self.groups.items() if g.dismissed),
            "tag_groups": tag_groups,
        }
