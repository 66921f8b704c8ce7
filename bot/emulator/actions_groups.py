"""World actions on customer groups (change_external_chat), each returning its callback fields.

Every member change moves ``member_version``; the update callback carries LastMemVer / CurMemVer so the
receiver can tell when it missed one. ``join_scene`` uses groupchat/get's codes (1 invited directly,
2 via invite link, 3 via QR code); the callback's JoinScene folds 1 and 2 into 0 ("invited by a member").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from bot.emulator.base import Fields, StateData, WorldError
from bot.emulator.records import Group, GroupMember

EVENT = "change_external_chat"
QR_SCENE = 3


class GroupActions(StateData):
    def _bump_version(self, group: Group) -> tuple[str, str]:
        last = group.member_version
        group.version_counter += 1
        group.member_version = hashlib.md5(f"{group.chat_id}:{group.version_counter}".encode()).hexdigest()
        return last, group.member_version

    def _member(self, member_id: str, join_scene: int, invitor: str, state: str, name: str | None) -> GroupMember:
        staff = self.staff.get(member_id)
        if staff is not None:
            return GroupMember(member_id, 1, self.now_int(), join_scene, invitor, state, staff.name)
        contact = self.contacts.get(member_id)
        display = name or (contact.name if contact else "微信用户")
        return GroupMember(member_id, 2, self.now_int(), join_scene, invitor, state, display)

    def create_group(
        self,
        owner: str,
        name: str,
        members: Sequence[str] = (),
        *,
        chat_id: str | None = None,
        notice: str = "",
        admins: Sequence[str] = (),
        names: Mapping[str, str] | None = None,
    ) -> Fields:
        """``owner`` created a customer group with ``members`` (ids of staff or customers) — ``create``."""
        self.require_staff(owner)
        cid = chat_id or self.new_id("group")
        if cid in self.groups:
            raise WorldError(f"group {cid} exists already")
        group = Group(chat_id=cid, name=name, owner=owner, create_time=self.now_int(), notice=notice)
        group.members[owner] = self._member(owner, 1, "", "", None)
        for member_id in members:
            if member_id not in group.members:
                group.members[member_id] = self._member(member_id, 1, owner, "", (names or {}).get(member_id))
        group.admins = [a for a in admins if a in group.members and a != owner]
        self._bump_version(group)
        self.groups[cid] = group
        return self.event_fields(EVENT, "create", ChatId=cid)

    def join_group(
        self,
        chat_id: str,
        members: Sequence[str],
        join_scene: int = QR_SCENE,
        *,
        invitor: str = "",
        state: str = "",
        names: Mapping[str, str] | None = None,
    ) -> Fields:
        """People joined the group (update / add_member)."""
        group = self.require_group(chat_id)
        joined = [m for m in dict.fromkeys(members) if m not in group.members]
        if not joined:
            raise WorldError(f"nobody new joins {chat_id}")
        inviter = invitor or (group.owner if join_scene != QR_SCENE else "")
        for member_id in joined:
            group.members[member_id] = self._member(member_id, join_scene, inviter, state, (names or {}).get(member_id))
        last, cur = self._bump_version(group)
        return self.event_fields(
            EVENT,
            "update",
            ChatId=chat_id,
            UpdateDetail="add_member",
            JoinScene=QR_SCENE if join_scene == QR_SCENE else 0,
            MemChangeCnt=len(joined),
            MemChangeList=joined,
            LastMemVer=last,
            CurMemVer=cur,
        )

    def leave_group(self, chat_id: str, members: Sequence[str], *, quit_scene: int = 0) -> Fields:
        """Members left (``quit_scene`` 0) or were removed (1) — update / del_member."""
        group = self.require_group(chat_id)
        left = [m for m in dict.fromkeys(members) if m in group.members]
        if not left:
            raise WorldError(f"none of {list(members)} is in {chat_id}")
        if group.owner in left:
            raise WorldError(f"the owner {group.owner} cannot leave {chat_id}; change the owner first")
        for member_id in left:
            del group.members[member_id]
        group.admins = [a for a in group.admins if a in group.members]
        last, cur = self._bump_version(group)
        return self.event_fields(
            EVENT,
            "update",
            ChatId=chat_id,
            UpdateDetail="del_member",
            QuitScene=quit_scene,
            MemChangeCnt=len(left),
            MemChangeList=left,
            LastMemVer=last,
            CurMemVer=cur,
        )

    def rename_group(self, chat_id: str, name: str) -> Fields:
        group = self.require_group(chat_id)
        group.name = name
        return self.event_fields(EVENT, "update", ChatId=chat_id, UpdateDetail="change_name")

    def change_notice(self, chat_id: str, notice: str) -> Fields:
        group = self.require_group(chat_id)
        group.notice = notice
        return self.event_fields(EVENT, "update", ChatId=chat_id, UpdateDetail="change_notice")

    def change_owner(self, chat_id: str, new_owner: str) -> Fields:
        """Ownership passes to a staff member already in the group (update / change_owner)."""
        group = self.require_group(chat_id)
        self.require_staff(new_owner)
        if new_owner not in group.members:
            raise WorldError(f"{new_owner} is not in {chat_id}")
        group.owner = new_owner
        group.admins = [a for a in group.admins if a != new_owner]
        return self.event_fields(EVENT, "update", ChatId=chat_id, UpdateDetail="change_owner")

    def dismiss_group(self, chat_id: str) -> Fields:
        group = self.require_group(chat_id)
        group.dismissed = True
        return self.event_fields(EVENT, "dismiss", ChatId=chat_id)
