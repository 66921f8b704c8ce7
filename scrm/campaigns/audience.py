"""Expanding a campaign's audience into targets, in bulk, at send time.

Groups: active customer groups, filtered by the SOP audience rules (:func:`scrm.audience.group_in_audience`)
plus their creation date; the sender is the group owner. Contacts (1v1): contacts with a live follow relation,
filtered by :func:`scrm.audience.contact_in_audience` plus the date the relation was added; the sender is
the staff member of the most recently added live relation (within ``staff`` when the audience names staff).
A handful of queries load everything for the whole corp (groups, staff, dealers; contacts, relations, tags),
so 10,000 groups cost milliseconds of SQL, not 10,000 round trips.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.audience import ContactFacts, GroupFacts, contact_in_audience, dealer_variables, group_in_audience
from scrm.campaigns.spec import CampaignAudience
from scrm.models import Contact, ContactTag, CustomerGroup, Dealer, FollowRelation, Staff, Tag, TagGroup

IN_CHUNK = 900  # ids per IN (...) list: below SQLite's 999 bound parameters


@dataclass(frozen=True, slots=True)
class Target:
    target_type: str  # group | contact
    target_id: str  # chat_id | external_userid
    name: str
    sender: str  # group owner | follow staff member ("" = nobody can send it)
    context: dict[str, Any] = field(default_factory=dict)  # group/contact, staff, dealer variables


async def _staff_and_dealers(session: AsyncSession, corp_id: str) -> tuple[dict[str, Staff], dict[int, Dealer]]:
    staff = {s.userid: s for s in (await session.exec(select(Staff).where(Staff.corp_id == corp_id))).all()}
    dealers = {d.id: d for d in (await session.exec(select(Dealer).where(Dealer.corp_id == corp_id))).all() if d.id}
    return staff, dealers


def _staff_variables(member: Staff | None, userid: str) -> dict[str, Any]:
    return {"userid": userid, "name": member.name if member else ""}


async def expand_groups(session: AsyncSession, corp_id: str, audience: CampaignAudience) -> list[Target]:
    """Every active group in the audience, ordered by chat_id."""
    staff, dealers = await _staff_and_dealers(session, corp_id)
    query = select(CustomerGroup).where(CustomerGroup.corp_id == corp_id, CustomerGroup.status == "active")
    if audience.owner:
        query = query.where(col(CustomerGroup.owner_userid).in_(audience.owner))
    if audience.members is not None and audience.members.min is not None:
        query = query.where(CustomerGroup.member_count >= audience.members.min)
    if audience.members is not None and audience.members.max is not None:
        query = query.where(CustomerGroup.member_count <= audience.members.max)
    targets: list[Target] = []
    for group in (await session.exec(query.order_by(col(CustomerGroup.chat_id)))).all():
        owner = staff.get(group.owner_userid)
        dealer = dealers.get(group.dealer_id) if group.dealer_id is not None else None
        if dealer is None and owner is not None and owner.dealer_id is not None:
            dealer = dealers.get(owner.dealer_id)
        facts = GroupFacts(
            corp_id=corp_id,
            chat_id=group.chat_id,
            name=group.name,
            owner=group.owner_userid,
            owner_name=owner.name if owner else "",
            member_count=group.member_count,
            active=True,
            dealer_code=dealer.code if dealer else "",
            dealer=dealer_variables(dealer),
            tags=frozenset(group.tags or []),
        )
        if not group_in_audience(audience, facts):
            continue
        if audience.created is not None and not audience.created.contains(group.wecom_created_at):
            continue
        context = {
            "group": facts.variables(),
            "staff": _staff_variables(owner, group.owner_userid),
            "dealer": facts.dealer,
        }
        targets.append(Target("group", group.chat_id, group.name, group.owner_userid, context))
    return targets


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


async def _tags_by_contact(
    session: AsyncSession, corp_id: str, ids: Sequence[str]
) -> dict[str, tuple[list[str], set[str]]]:
    names_of: dict[str, tuple[str, str]] = {}
    rows = await session.exec(
        select(Tag.tag_id, Tag.name, TagGroup.name)
        .join(TagGroup, (col(TagGroup.group_id) == col(Tag.group_id)) & (col(TagGroup.corp_id) == col(Tag.corp_id)))
        .where(Tag.corp_id == corp_id, col(Tag.deleted).is_(False))
    )
    for tag_id, tag_name, group_name in rows.all():
        names_of[tag_id] = (tag_name, group_name)
    found: dict[str, tuple[list[str], set[str]]] = defaultdict(lambda: ([], set()))
    for chunk in _chunks(ids):
        links = await session.exec(
            select(ContactTag.external_userid, ContactTag.tag_id).where(
                ContactTag.corp_id == corp_id, col(ContactTag.external_userid).in_(chunk)
            )
        )
        for external_userid, tag_id in links.all():
            named = names_of.get(tag_id)
            if named is None:
                continue
            names, keys = found[external_userid]
            if named[0] not in names:
                names.append(named[0])
            keys.update({named[0], f"{named[1]}/{named[0]}"})
    return found


async def expand_contacts(session: AsyncSession, corp_id: str, audience: CampaignAudience) -> list[Target]:
    """Every contact in the audience with a live relation (the sender), ordered by external_userid."""
    staff, dealers = await _staff_and_dealers(session, corp_id)
    dealer_by_code = {d.code: d for d in dealers.values()}
    query = select(Contact).where(Contact.corp_id == corp_id)
    if audience.stage:
        query = query.where(col(Contact.stage).in_(audience.stage))
    if audience.intent_level:
        query = query.where(col(Contact.intent_level).in_(audience.intent_level))
    contacts = {c.external_userid: c for c in (await session.exec(query)).all()}
    relations = await session.exec(
        select(FollowRelation)
        .where(FollowRelation.corp_id == corp_id, col(FollowRelation.deleted_at).is_(None))
        .order_by(col(FollowRelation.added_at).desc(), col(FollowRelation.userid))
    )
    chosen: dict[str, FollowRelation] = {}
    for relation in relations.all():
        if relation.external_userid not in contacts or relation.external_userid in chosen:
            continue
        if audience.staff and relation.userid not in audience.staff:
            continue
        chosen[relation.external_userid] = relation
    ids = sorted(chosen)
    tags = await _tags_by_contact(session, corp_id, ids)
    targets: list[Target] = []
    for external_userid in ids:
        contact, relation = contacts[external_userid], chosen[external_userid]
        member = staff.get(relation.userid)
        dealer = dealer_by_code.get(relation.dealer_code) if relation.dealer_code else None
        if dealer is None and member is not None and member.dealer_id is not None:
            dealer = dealers.get(member.dealer_id)
        names, keys = tags.get(external_userid, ([], set()))
        facts = ContactFacts(
            corp_id=corp_id,
            external_userid=external_userid,
            staff_userid=relation.userid,
            name=contact.name,
            remark=relation.remark,
            stage=contact.stage,
            intent_level=contact.intent_level or "",
            score=contact.score,
            channel=relation.channel,
            dealer_code=dealer.code if dealer else "",
            added_at=relation.added_at,
            relation_live=True,
            dealer=dealer_variables(dealer),
            tags=frozenset(keys),
            tag_list=tuple(names),
        )
        if not contact_in_audience(audience, facts):
            continue
        if audience.created is not None and not audience.created.contains(relation.added_at):
            continue
        context = {
            "contact": {**facts.variables(), "corp_id": corp_id},
            "staff": _staff_variables(member, relation.userid),
            "dealer": facts.dealer,
        }
        targets.append(Target("contact", external_userid, contact.name, relation.userid, context))
    return targets


async def expand(session: AsyncSession, corp_id: str, chat_type: str, audience: CampaignAudience) -> list[Target]:
    if chat_type == "group":
        return await expand_groups(session, corp_id, audience)
    return await expand_contacts(session, corp_id, audience)
