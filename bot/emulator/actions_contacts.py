"""World actions on customers: what people do in the WeCom client, each returning its callback fields.

``change_external_contact`` (96361 / 92130). A customer who deletes the staff member (``del_follow_user``)
disappears from that member's relations here, the same as a deletion by staff; Lianyi records who deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.emulator.base import Fields, StateData, WorldError
from bot.emulator.records import ExternalContact, Follow

EVENT = "change_external_contact"


class ContactActions(StateData):
    def _ensure_contact(self, external_userid: str | None, name: str | None, gender: int) -> ExternalContact:
        ext = external_userid or self.new_id("contact")
        contact = self.contacts.get(ext)
        if contact is None:
            contact = ExternalContact(external_userid=ext, name=name or "微信用户", gender=gender)
            contact.unionid = "o" + ext[2:29]
            contact.avatar = f"https://wework.qpic.cn/wwhead/{ext}/0"
            self.contacts[ext] = contact
        elif name:
            contact.name = name
        return contact

    def _add(
        self,
        change_type: str,
        userid: str,
        external_userid: str | None,
        name: str | None,
        state: str,
        *,
        add_way: int,
        gender: int,
        welcome: bool | None,
        half: bool,
    ) -> Fields:
        staff = self.require_staff(userid)
        if not staff.has_contact_permission:
            raise WorldError(f"{userid} has no customer-contact permission")
        contact = self._ensure_contact(external_userid, name, gender)
        ext = contact.external_userid
        now = self.now_int()
        follow = self.follows.get((ext, userid))
        if follow is None:
            follow = Follow(userid=userid, external_userid=ext, createtime=now)
            self.put_follow(follow)
        follow.createtime, follow.state, follow.add_way, follow.half = now, state, add_way, half
        follow.oper_userid = ext if half else userid
        fields = self.event_fields(EVENT, change_type, UserID=userid, ExternalUserID=ext)
        if state:
            fields["State"] = state
        wants_code = (self.issue_welcome_codes and not staff.admin_welcome) if welcome is None else welcome
        if wants_code:
            fields["WelcomeCode"] = self.welcome_codes.issue(userid, ext, self.now())
        return fields

    def add_contact(
        self,
        userid: str,
        external_userid: str | None = None,
        name: str | None = None,
        state: str = "",
        *,
        add_way: int = 1,
        gender: int = 0,
        welcome: bool | None = None,
    ) -> Fields:
        """Staff member ``userid`` added a customer (or the customer scanned their contact-way QR code).

        A fresh WelcomeCode comes with it unless an admin welcome is configured for the member (or
        ``welcome=False``); ``welcome=True`` forces one.
        """
        return self._add(
            "add_external_contact",
            userid,
            external_userid,
            name,
            state,
            add_way=add_way,
            gender=gender,
            welcome=welcome,
            half=False,
        )

    def half_add(
        self,
        userid: str,
        external_userid: str | None = None,
        name: str | None = None,
        state: str = "",
        *,
        add_way: int = 1,
        gender: int = 0,
        welcome: bool | None = None,
    ) -> Fields:
        """The customer added ``userid`` without verification (add_half_external_contact)."""
        return self._add(
            "add_half_external_contact",
            userid,
            external_userid,
            name,
            state,
            add_way=add_way,
            gender=gender,
            welcome=welcome,
            half=True,
        )

    def edit_remark(
        self,
        userid: str,
        external_userid: str,
        remark: str | None = None,
        description: str | None = None,
        mobiles: Sequence[str] | None = None,
    ) -> Fields:
        """The staff member edited the remark in the client (edit_external_contact)."""
        follow = self.require_follow(userid, external_userid)
        if remark is not None:
            follow.remark = remark
        if description is not None:
            follow.description = description
        if mobiles is not None:
            follow.remark_mobiles = list(mobiles)
        return self.event_fields(EVENT, "edit_external_contact", UserID=userid, ExternalUserID=external_userid)

    def mark_tags_in_client(
        self, userid: str, external_userid: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Fields:
        """The staff member marked corp tags in the client (edit_external_contact)."""
        follow = self.require_follow(userid, external_userid)
        for tag_id in (*add, *remove):
            if self.find_tag(tag_id) is None:
                raise WorldError(f"unknown corp tag {tag_id!r}")
        follow.tag_ids = [t for t in follow.tag_ids if t not in set(remove)]
        follow.tag_ids.extend(t for t in add if t not in follow.tag_ids)
        return self.event_fields(EVENT, "edit_external_contact", UserID=userid, ExternalUserID=external_userid)

    def staff_delete_contact(self, userid: str, external_userid: str, *, source: str = "") -> Fields:
        """The staff member deleted the customer (del_external_contact; ``source`` DELETE_BY_TRANSFER)."""
        self.require_follow(userid, external_userid)
        self.drop_follow(userid, external_userid)
        fields = self.event_fields(EVENT, "del_external_contact", UserID=userid, ExternalUserID=external_userid)
        if source:
            fields["Source"] = source
        return fields

    def contact_deletes_staff(self, userid: str, external_userid: str) -> Fields:
        """The customer deleted the staff member (del_follow_user, a churn signal)."""
        self.require_follow(userid, external_userid)
        self.drop_follow(userid, external_userid)
        return self.event_fields(EVENT, "del_follow_user", UserID=userid, ExternalUserID=external_userid)

    def transfer_fail(self, takeover_userid: str, external_userid: str, reason: str = "customer_refused") -> Fields:
        """A 在职继承 transfer to ``takeover_userid`` failed (transfer_fail)."""
        self.require_staff(takeover_userid)
        return self.event_fields(
            EVENT, "transfer_fail", UserID=takeover_userid, ExternalUserID=external_userid, FailReason=reason
        )
