"""Lianyi's database in the shape of the emulator's ``snapshot()``, so end-to-end tests compare the two."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from scrm.db import SessionFactory
from scrm.models import Contact, ContactTag, CustomerGroup, Dealer, FollowRelation, GroupMember, Staff, Tag, TagGroup


async def database_snapshot(factory: SessionFactory, corp_id: str) -> dict[str, Any]:
    async with factory() as s:
        dealers = {d.id: d.code for d in (await s.exec(select(Dealer).where(Dealer.corp_id == corp_id))).all()}
        staff = {
            row.userid: {
                "name": row.name,
                "dealer": dealers.get(row.dealer_id, "") if row.dealer_id else "",
                "contact_permission": row.has_contact_permission,
            }
            for row in (await s.exec(select(Staff).where(Staff.corp_id == corp_id))).all()
        }
        contacts = {
            c.external_userid: {"name": c.name, "type": c.type, "gender": c.gender, "unionid": c.unionid}
            for c in (await s.exec(select(Contact).where(Contact.corp_id == corp_id))).all()
        }
        tags_of: dict[tuple[str, str], list[str]] = {}
        for ct in (await s.exec(select(ContactTag).where(ContactTag.corp_id == corp_id))).all():
            tags_of.setdefault((ct.external_userid, ct.userid), []).append(ct.tag_id)
        follows: dict[str, dict[str, Any]] = {}
        for f in (
            await s.exec(
                select(FollowRelation).where(
                    FollowRelation.corp_id == corp_id, col(FollowRelation.deleted_at).is_(None)
                )
            )
        ).all():
            follows.setdefault(f.external_userid, {})[f.userid] = {
                "remark": f.remark,
                "description": f.description,
                "state": f.state,
                "add_way": f.add_way,
                "half": f.half_added,
                "tags": sorted(tags_of.get((f.external_userid, f.userid), [])),
            }
        members: dict[str, list[GroupMember]] = {}
        for m in (
            await s.exec(select(GroupMember).where(GroupMember.corp_id == corp_id, col(GroupMember.left_at).is_(None)))
        ).all():
            members.setdefault(m.chat_id, []).append(m)
        groups: dict[str, Any] = {}
        dismissed: list[str] = []
        for g in (await s.exec(select(CustomerGroup).where(CustomerGroup.corp_id == corp_id))).all():
            if g.status == "dismissed":
                dismissed.append(g.chat_id)
                continue
            in_group = members.get(g.chat_id, [])
            groups[g.chat_id] = {
                "name": g.name,
                "owner": g.owner_userid,
                "notice": g.notice,
                "member_version": g.member_version,
                "members": sorted(m.member_id for m in in_group),
                "customers": sorted(m.member_id for m in in_group if m.member_type == 2),
            }
        tag_groups: dict[str, Any] = {}
        live_tags = (await s.exec(select(Tag).where(Tag.corp_id == corp_id, col(Tag.deleted).is_(False)))).all()
        for tg in (
            await s.exec(select(TagGroup).where(TagGroup.corp_id == corp_id, col(TagGroup.deleted).is_(False)))
        ).all():
            tag_groups[tg.group_id] = {
                "name": tg.name,
                "order": tg.order,
                "strategy_id": tg.strategy_id,
                "tags": {t.tag_id: {"name": t.name, "order": t.order} for t in live_tags if t.group_id == tg.group_id},
            }
    return {
        "corp_id": corp_id,
        "staff": dict(sorted(staff.items())),
        "contacts": dict(sorted(contacts.items())),
        "follows": {k: dict(sorted(v.items())) for k, v in sorted(follows.items())},
        "groups": dict(sorted(groups.items())),
        "dismissed_groups": sorted(dismissed),
        "tag_groups": dict(sorted(tag_groups.items())),
    }


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The part of a snapshot (emulator's or ours) that WeCom lets Lianyi know and Lianyi mirrors.

    - contacts: only those with at least one live follow relation — for a customer who deleted every staff
      member, externalcontact/get answers 84061 and WeCom tells nobody their name any more;
    - staff: only members with customer-contact permission (get_follow_user_list is all Lianyi reads);
    - groups: without admin lists, which Lianyi does not mirror.
    """
    view = dict(snapshot)
    followed = set(snapshot["follows"])
    view["contacts"] = {ext: c for ext, c in snapshot["contacts"].items() if ext in followed}
    view["staff"] = {u: s for u, s in snapshot["staff"].items() if s["contact_permission"]}
    view["groups"] = {
        chat_id: {k: v for k, v in group.items() if k != "admins"} for chat_id, group in snapshot["groups"].items()
    }
    return view


def diff(expected: dict[str, Any], actual: dict[str, Any], path: str = "") -> list[str]:
    """Human-readable differences (first 40) between two nested dicts."""
    out: list[str] = []
    for key in sorted(set(expected) | set(actual), key=str):
        where = f"{path}/{key}"
        if key not in actual:
            out.append(f"missing in database: {where} = {expected[key]!r}"[:300])
        elif key not in expected:
            out.append(f"extra in database: {where} = {actual[key]!r}"[:300])
        elif isinstance(expected[key], dict) and isinstance(actual[key], dict):
            out.extend(diff(expected[key], actual[key], where))
        elif expected[key] != actual[key]:
            out.append(f"differs at {where}: emulator {expected[key]!r} vs database {actual[key]!r}"[:300])
    return out[:40]
