"""Audiences: who an SOP step or a campaign is for. The audience format (a part of both file formats), the facts
known about a subject (a contact through one staff member, or a customer group), loaded in one place, and the
audience rules evaluated against them. SOP exit rules (an SOP-only idea) live in :mod:`scrm.sop.exits`."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.models import Contact, ContactTag, CustomerGroup, Dealer, FollowRelation, Staff, Tag, TagGroup
from scrm.spec_fields import Levels, Names, Stages, StrictModel

LEVELS = ("H", "A", "B", "C")  # hottest first: H buys within ~7 days
STAGES = ("prospect", "intent", "owner", "lost")
GROUP_ONLY_AUDIENCE = ("group_tags", "name", "members", "owner")
CONTACT_ONLY_AUDIENCE = ("tags", "stage", "intent_level", "channel", "staff")


class TagCondition(StrictModel):
    any: Names = Field(default_factory=list)
    all: Names = Field(default_factory=list)
    none: Names = Field(default_factory=list)

    def names(self) -> list[str]:
        return [*self.any, *self.all, *self.none]


class MemberRange(StrictModel):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class Audience(StrictModel):
    # contacts
    tags: TagCondition | None = None
    stage: Stages = Field(default_factory=list)
    intent_level: Levels = Field(default_factory=list)
    channel: Names = Field(default_factory=list)
    staff: Names = Field(default_factory=list)
    # both: the contact's dealer (channel dealer, else the staff member's) or the group's dealer
    dealer: Names = Field(default_factory=list)
    # groups
    group_tags: TagCondition | None = None
    name: str | None = None  # glob, e.g. "*车友群*"
    members: MemberRange | None = None
    owner: Names = Field(default_factory=list)


STAGE_CN = {"prospect": "潜客", "intent": "意向", "owner": "车主", "lost": "战败"}


@dataclass(frozen=True, slots=True)
class ContactFacts:
    corp_id: str
    external_userid: str
    staff_userid: str  # the staff member whose relation the SOP runs through ("" = none is live)
    name: str = ""
    remark: str = ""
    stage: str = "prospect"
    intent_level: str = ""
    score: int = 0
    channel: str = ""
    state: str = ""
    dealer_code: str = ""
    advisor_userid: str = ""
    added_at: datetime | None = None
    last_active_at: datetime | None = None
    relation_live: bool = False
    staff_name: str = ""
    dealer: Mapping[str, Any] | None = None
    tags: frozenset[str] = frozenset()  # every tag as "name" and as "group/name"
    tag_list: tuple[str, ...] = ()  # tag names, for templates

    def variables(self) -> dict[str, Any]:
        return {
            "external_userid": self.external_userid,
            "name": self.name,
            "remark": self.remark,
            "stage": self.stage,
            "stage_cn": STAGE_CN.get(self.stage, self.stage),
            "intent_level": self.intent_level,
            "score": self.score,
            "tags": list(self.tag_list),
            "channel": self.channel,
            "added_at": self.added_at,
        }


@dataclass(frozen=True, slots=True)
class GroupFacts:
    corp_id: str
    chat_id: str
    name: str = ""
    owner: str = ""
    owner_name: str = ""
    member_count: int = 0
    active: bool = True
    dealer_code: str = ""
    dealer: Mapping[str, Any] | None = None
    tags: frozenset[str] = field(default_factory=frozenset)

    def variables(self) -> dict[str, Any]:
        return {
            "chat_id": self.chat_id,
            "name": self.name,
            "owner": self.owner,
            "owner_name": self.owner_name,
            "member_count": self.member_count,
        }


def dealer_variables(dealer: Dealer | None) -> dict[str, Any] | None:
    if dealer is None:
        return None
    return {
        "code": dealer.code,
        "name": dealer.name,
        "city": dealer.city,
        "address": dealer.address,
        "phone": dealer.phone,
        "hours": dealer.hours,
        "answers": dict(dealer.answers or {}),
    }


async def _dealer(session: AsyncSession, corp_id: str, code: str, staff: Staff | None) -> Dealer | None:
    if code:
        found = (await session.exec(select(Dealer).where(Dealer.corp_id == corp_id, Dealer.code == code))).first()
        if found is not None:
            return found
    if staff is not None and staff.dealer_id is not None:
        return await session.get(Dealer, staff.dealer_id)
    return None


async def _staff(session: AsyncSession, corp_id: str, userid: str) -> Staff | None:
    if not userid:
        return None
    return (await session.exec(select(Staff).where(Staff.corp_id == corp_id, Staff.userid == userid))).first()


async def contact_tag_names(session: AsyncSession, corp_id: str, external_userid: str) -> tuple[list[str], set[str]]:
    """The contact's corp tags (through any staff member) as names, and as names + "group/name" keys."""
    rows = await session.exec(
        select(Tag.name, TagGroup.name)
        .join(ContactTag, (col(ContactTag.tag_id) == col(Tag.tag_id)) & (col(ContactTag.corp_id) == col(Tag.corp_id)))
        .join(TagGroup, (col(TagGroup.group_id) == col(Tag.group_id)) & (col(TagGroup.corp_id) == col(Tag.corp_id)))
        .where(
            ContactTag.corp_id == corp_id, ContactTag.external_userid == external_userid, col(Tag.deleted).is_(False)
        )
    )
    names: list[str] = []
    keys: set[str] = set()
    for tag_name, group_name in rows.all():
        if tag_name not in names:
            names.append(tag_name)
        keys.update({tag_name, f"{group_name}/{tag_name}"})
    return names, keys


async def load_contact(
    session: AsyncSession, corp_id: str, external_userid: str, staff_userid: str = ""
) -> ContactFacts | None:
    """The contact as seen through ``staff_userid`` (or its most recent live relation); None if unknown."""
    contact = (
        await session.exec(
            select(Contact).where(Contact.corp_id == corp_id, Contact.external_userid == external_userid)
        )
    ).first()
    if contact is None:
        return None
    query = select(FollowRelation).where(
        FollowRelation.corp_id == corp_id, FollowRelation.external_userid == external_userid
    )
    if staff_userid:
        query = query.where(FollowRelation.userid == staff_userid)
    else:
        query = query.where(col(FollowRelation.deleted_at).is_(None)).order_by(col(FollowRelation.added_at).desc())
    relation = (await session.exec(query)).first()
    staff = await _staff(session, corp_id, relation.userid if relation else "")
    dealer = await _dealer(session, corp_id, relation.dealer_code if relation else "", staff)
    names, keys = await contact_tag_names(session, corp_id, external_userid)
    return ContactFacts(
        corp_id=corp_id,
        external_userid=external_userid,
        staff_userid=relation.userid if relation else staff_userid,
        name=contact.name,
        remark=relation.remark if relation else "",
        stage=contact.stage,
        intent_level=contact.intent_level or "",
        score=contact.score,
        channel=relation.channel if relation else "",
        state=relation.state if relation else "",
        dealer_code=dealer.code if dealer else "",
        advisor_userid=relation.advisor_userid if relation else "",
        added_at=relation.added_at if relation else None,
        last_active_at=contact.last_active_at,
        relation_live=relation is not None and relation.deleted_at is None,
        staff_name=staff.name if staff else "",
        dealer=dealer_variables(dealer),
        tags=frozenset(keys),
        tag_list=tuple(names),
    )


async def load_group(session: AsyncSession, corp_id: str, chat_id: str) -> GroupFacts | None:
    group = (
        await session.exec(
            select(CustomerGroup).where(CustomerGroup.corp_id == corp_id, CustomerGroup.chat_id == chat_id)
        )
    ).first()
    if group is None:
        return None
    owner = await _staff(session, corp_id, group.owner_userid)
    dealer: Dealer | None = None
    if group.dealer_id is not None:
        dealer = await session.get(Dealer, group.dealer_id)
    if dealer is None:
        dealer = await _dealer(session, corp_id, "", owner)
    return GroupFacts(
        corp_id=corp_id,
        chat_id=chat_id,
        name=group.name,
        owner=group.owner_userid,
        owner_name=owner.name if owner else "",
        member_count=group.member_count,
        active=group.status == "active",
        dealer_code=dealer.code if dealer else "",
        dealer=dealer_variables(dealer),
        tags=frozenset(group.tags or []),
    )


def _tags_match(condition: TagCondition | None, have: Iterable[str]) -> bool:
    if condition is None:
        return True
    owned = set(have)
    if condition.any and not owned.intersection(condition.any):
        return False
    if condition.all and not set(condition.all) <= owned:
        return False
    return not owned.intersection(condition.none)


def contact_in_audience(audience: Audience, facts: ContactFacts) -> bool:
    return (
        _tags_match(audience.tags, facts.tags)
        and (not audience.stage or facts.stage in audience.stage)
        and (not audience.intent_level or facts.intent_level in audience.intent_level)
        and (not audience.channel or facts.channel in audience.channel)
        and (not audience.dealer or facts.dealer_code in audience.dealer)
        and (not audience.staff or facts.staff_userid in audience.staff)
    )


def group_in_audience(audience: Audience, facts: GroupFacts) -> bool:
    members = audience.members
    return (
        facts.active
        and _tags_match(audience.group_tags, facts.tags)
        and (audience.name is None or fnmatch.fnmatchcase(facts.name, audience.name))
        and (members is None or members.min is None or facts.member_count >= members.min)
        and (members is None or members.max is None or facts.member_count <= members.max)
        and (not audience.owner or facts.owner in audience.owner)
        and (not audience.dealer or facts.dealer_code in audience.dealer)
    )
