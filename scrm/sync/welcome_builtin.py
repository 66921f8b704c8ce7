"""The built-in welcome: answers an add with ``sop_templates/welcome/<channel>.j2`` when no enabled SOP template
has a welcome step (see :meth:`scrm.sop.catalog.Catalog.has_welcome_step`)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.channel import parse_state
from scrm.commands import CommandKind, enqueue
from scrm.models import Contact, Dealer, FollowRelation, Staff
from scrm.welcome import WelcomeTemplateError, build_context, renderer_for

log = logging.getLogger(__name__)

WELCOME_WINDOW = timedelta(seconds=20)  # send_welcome_msg must come within 20 s of the add event


@functools.cache
def _staff_and_dealers() -> Any:
    """The member, the dealer named by the channel, the member's own dealer (built once: see _rows)."""
    by_code = aliased(Dealer)
    by_staff = aliased(Dealer)
    corp: Any = bindparam("corp_id")
    return (
        select(Staff, by_code, by_staff)
        .select_from(Staff)
        .outerjoin(by_code, and_(col(by_code.corp_id) == corp, col(by_code.code) == bindparam("dealer_code")))
        .outerjoin(by_staff, col(by_staff.id) == col(Staff.dealer_id))
        .where(Staff.corp_id == corp, Staff.userid == bindparam("userid"))
    )


async def _welcome_context(
    session: AsyncSession, corp_id: str, contact: Contact, relation: FollowRelation, event_time: datetime
) -> dict[str, Any]:
    # One statement: the member, the dealer named by the channel and the member's own dealer (either may be
    # missing); the channel's dealer wins.
    params = {"corp_id": corp_id, "userid": relation.userid, "dealer_code": relation.dealer_code}
    row = (await session.exec(_staff_and_dealers(), params=params)).first()
    staff: Staff | None = row[0] if row else None
    dealer: Dealer | None = (row[1] or row[2]) if row else None
    if row is None and relation.dealer_code:
        dealer = (
            await session.exec(select(Dealer).where(Dealer.corp_id == corp_id, Dealer.code == relation.dealer_code))
        ).first()
    return build_context(
        contact={"external_userid": contact.external_userid, "name": contact.name},
        staff={"userid": relation.userid, "name": staff.name if staff else ""},
        dealer={"code": dealer.code, "name": dealer.name, "city": dealer.city} if dealer else None,
        channel=parse_state(relation.state),
        now=event_time,
    )


async def enqueue_builtin_welcome(
    session: AsyncSession,
    corp_id: str,
    contact: Contact,
    relation: FollowRelation,
    welcome_code: str,
    event_time: datetime,
    sop_dir: Path,
) -> None:
    context = await _welcome_context(session, corp_id, contact, relation, event_time)
    try:
        message = renderer_for(sop_dir).render(relation.channel, context)
    except WelcomeTemplateError as exc:
        log.error(
            "no welcome sent: default welcome template is broken",
            extra={"external_userid": contact.external_userid, "error": str(exc)},
        )
        await audit.record(
            session, corp_id, "welcome.template_broken", "contact", contact.external_userid, {"error": str(exc)}
        )
        return
    await enqueue(
        session,
        corp_id=corp_id,
        kind=CommandKind.SEND_WELCOME,
        key=f"welcome:{welcome_code}",
        payload={
            "welcome_code": welcome_code,
            "text": {"content": message.text},  # WeCom's shape: send_welcome_msg takes it as is
            "attachments": message.attachments,
            "external_userid": contact.external_userid,
            "userid": relation.userid,
            "template": message.template,
        },
        deadline=event_time + WELCOME_WINDOW,
    )
