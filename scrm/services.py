"""The services of one process, built once at start and passed explicitly to every handler and tick.

This is the only module of ``scrm`` that knows every feature package: it owns each feature's services (the SOP
engine's catalog and compiled templates, the lead handoff rules, the intent classifier, the link signer) and
implements :class:`~scrm.lifecycle.LifecycleHooks` by calling the features that care about each fact, so the
feature packages never import each other (``.importlinter`` enforces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.folder_check import RULE_FILES
from scrm.intent.pipeline import on_behaviour
from scrm.intent.services import IntentServices
from scrm.leads import handoff
from scrm.leads.actions import on_staff_message
from scrm.leads.rules import HANDOFF_BEHAVIOURS
from scrm.leads.services import LeadServices
from scrm.leads.transfers import apply_transfer_fail
from scrm.lifecycle import ContactAdded, LifecycleHooks, ReceivedMessage
from scrm.links import LinkSigner
from scrm.models import Message
from scrm.rows import epoch
from scrm.sop import triggers
from scrm.sop.catalog import CatalogHolder
from scrm.sop.services import SopServices
from scrm.sync.groups import MEMBER_CUSTOMER, member_type_of


@dataclass
class Services(LifecycleHooks):
    """Everything the domain needs from its process. ``sop`` or ``leads`` None = that feature is off."""

    sop_dir: Path
    intent: IntentServices
    sop: SopServices | None = None
    leads: LeadServices | None = None

    def __post_init__(self) -> None:
        # the features' own facts reach the others through us: a lead's outcome (delivered, lost), a tag an SOP
        # step added
        if self.leads is not None:
            self.leads.hooks = self
        if self.sop is not None:
            self.sop.hooks = self

    @classmethod
    def build(
        cls,
        sop_dir: str | Path,
        *,
        links: LinkSigner | None = None,
        console_url: str = "https://work.weixin.qq.com/",
    ) -> Services:
        """The services of a process that runs every feature on the SOP folder ``sop_dir``."""
        folder = Path(sop_dir)
        return cls(
            sop_dir=folder,
            intent=IntentServices(folder),
            sop=SopServices(
                holder=CatalogHolder(folder.resolve(), rule_files=RULE_FILES), links=links, console_url=console_url
            ),
            leads=LeadServices(folder, console_url),
        )

    @property
    def links(self) -> LinkSigner | None:
        return self.sop.links if self.sop is not None else None

    # ---- lifecycle hooks ----------------------------------------------------------------------------------

    async def contact_added(self, session: AsyncSession, corp_id: str, added: ContactAdded) -> None:
        if self.sop is not None:
            await triggers.contact_added(
                session,
                self.sop,
                corp_id,
                external_userid=added.external_userid,
                userid=added.userid,
                state=added.state,
                channel=added.channel,
                dealer_code=added.dealer_code,
                welcome_code=added.welcome_code,
                event_time=added.event_time,
            )

    async def contact_tagged(
        self,
        session: AsyncSession,
        corp_id: str,
        external_userid: str,
        userid: str,
        tag_ids: Sequence[str],
        at: datetime,
    ) -> None:
        if self.sop is not None:
            await triggers.tags_added(session, self.sop, corp_id, external_userid, userid, list(tag_ids), at=at)

    async def subject_changed(
        self, session: AsyncSession, corp_id: str, subject_type: str, subject_id: str, at: datetime
    ) -> None:
        if self.sop is not None:
            await triggers.recheck_exits(session, self.sop, corp_id, subject_type, subject_id, at)

    async def group_members_joined(
        self,
        session: AsyncSession,
        corp_id: str,
        chat_id: str,
        members: Sequence[str],
        at: datetime,
        join_scene: int | None,
    ) -> None:
        if self.sop is not None:
            await triggers.member_joined(session, self.sop, corp_id, chat_id, list(members), at=at)
        for member in members:  # a customer joining a dealer group is an intent signal
            if member_type_of(member) == MEMBER_CUSTOMER:
                await on_behaviour(
                    session,
                    corp_id,
                    member,
                    kind="join_group",
                    ref=f"join:{chat_id}:{member}:{epoch(at)}",
                    at=at,
                    detail={"chat_id": chat_id, "join_scene": join_scene},
                    intent=self.intent,
                    hooks=self,
                )

    async def customer_transfer_failed(
        self,
        session: AsyncSession,
        corp_id: str,
        *,
        takeover_userid: str,
        external_userid: str,
        fail_reason: str,
        at: datetime,
    ) -> None:
        await apply_transfer_fail(
            session,
            corp_id,
            takeover_userid=takeover_userid,
            external_userid=external_userid,
            fail_reason=fail_reason,
            now=at,
        )

    async def message_stored(self, session: AsyncSession, corp_id: str, message: ReceivedMessage) -> None:
        if self.sop is not None:
            await triggers.message_received(
                session,
                self.sop,
                corp_id,
                msgid=message.msgid,
                text=message.text,
                chat_type=message.chat_type,
                chat_id=message.chat_id,
                external_userid=message.external_userid,
                userid=message.userid,
                at=message.at,
            )

    async def staff_messaged(self, session: AsyncSession, corp_id: str, message: Message, at: datetime) -> None:
        await on_staff_message(session, corp_id, message, now=at)

    async def behaviour_recorded(
        self, session: AsyncSession, corp_id: str, external_userid: str, code: str, at: datetime
    ) -> None:
        if self.leads is not None and code in HANDOFF_BEHAVIOURS:  # a booking or a form hands off at once
            await handoff.consider(session, self.leads, corp_id, external_userid, trigger=code, now=at)

    async def stage_changed(
        self, session: AsyncSession, corp_id: str, external_userid: str, old: str, new: str, at: datetime
    ) -> None:
        if self.sop is not None:
            await triggers.stage_changed(session, self.sop, corp_id, external_userid, old, new, at=at)

    async def intent_level_changed(
        self, session: AsyncSession, corp_id: str, external_userid: str, old: str, new: str, at: datetime
    ) -> None:
        if self.sop is not None:
            await triggers.intent_level_changed(session, self.sop, corp_id, external_userid, old, new, at=at)
        if self.leads is not None:
            await handoff.consider(session, self.leads, corp_id, external_userid, trigger=f"level_{new}", now=at)
