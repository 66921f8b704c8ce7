"""What each SOP step action writes: outbox commands, touches in the ledger, local tag changes.

Everything here runs inside the engine's transaction, after the step's key was claimed; a command's
idempotency key is derived from the step key, so even a second claim could not send twice.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm import audit
from scrm.audience import ContactFacts, GroupFacts
from scrm.commands import CommandKind, enqueue
from scrm.errors import LianyiError
from scrm.models import ContactTag, SopEnrolment, Tag, TagGroup
from scrm.rows import insert_ignore
from scrm.sop.render import RenderedMessage, SopRenderer, SopRenderError
from scrm.sop.services import SopServices
from scrm.sop.spec import Message, Step, TemplateBundle
from scrm.touches import record_touch

log = logging.getLogger(__name__)

WELCOME_WINDOW = timedelta(seconds=20)  # send_welcome_msg must come within 20 s of the add event
TEXTCARD_DESCRIPTION_MAX = 512  # bytes, message/send textcard.description
SOURCE = "sop"


class StepSkipped(LianyiError):
    """The step cannot run for this subject (no relation, no welcome code…): recorded as skipped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StepRun:
    """The facts one step action needs, and what it produced."""

    session: AsyncSession
    services: SopServices
    # enrol this step's subject into another template now (the engine's enrol, bound to this step)
    start: Callable[[TemplateBundle], Awaitable[None]]
    enrolment: SopEnrolment
    bundle: TemplateBundle
    step: Step
    step_key: str
    facts: ContactFacts | GroupFacts
    variables: Mapping[str, Any]
    renderer: SopRenderer
    now: datetime
    commands: list[str] = field(default_factory=list)

    @property
    def corp_id(self) -> str:
        return self.enrolment.corp_id

    async def command(
        self, kind: CommandKind, payload: dict[str, Any], *, suffix: str = "", deadline: datetime | None = None
    ) -> str:
        key = f"{self.step_key}:{suffix}" if suffix else self.step_key
        await enqueue(self.session, corp_id=self.corp_id, kind=kind, key=key, payload=payload, deadline=deadline)
        self.commands.append(key)
        return key

    def render(self, message: Message) -> tuple[str, list[dict[str, Any]]]:
        rendered = self.rendered(message)
        return rendered.text, list(rendered.attachments)

    def rendered(self, message: Message) -> RenderedMessage:
        channel = self.facts.channel if isinstance(self.facts, ContactFacts) else ""
        return self.renderer.render(message, self.variables, channel=channel)


def _contact(run: StepRun) -> ContactFacts:
    if not isinstance(run.facts, ContactFacts):
        raise StepSkipped("not_a_contact")
    return run.facts


def _group(run: StepRun) -> GroupFacts:
    if not isinstance(run.facts, GroupFacts):
        raise StepSkipped("not_a_group")
    return run.facts


def _text_payload(text: str) -> dict[str, Any]:
    return {"content": text} if text else {}


async def welcome(run: StepRun) -> None:
    facts = _contact(run)
    code = str(run.enrolment.context.get("welcome_code") or "")
    if not code:
        raise StepSkipped("no_welcome_code")  # an admin welcome is configured, or the chat already began
    event_time = datetime.fromisoformat(str(run.enrolment.context.get("event_time") or run.now.isoformat()))
    assert run.step.welcome is not None
    try:
        rendered = run.rendered(run.step.welcome)
    except SopRenderError as exc:  # the customer gets no welcome: say so where operators look
        detail = {"error": str(exc), "template": run.bundle.id, "step": run.step_key}
        await audit.record(
            run.session, run.corp_id, "welcome.template_broken", "contact", facts.external_userid, detail
        )
        raise
    key = f"welcome:{code}"  # one welcome code, one send, however often the add is replayed
    payload = {
        "welcome_code": code,
        "text": _text_payload(rendered.text),
        "attachments": list(rendered.attachments),
        "external_userid": facts.external_userid,
        "userid": facts.staff_userid,
        "template": posixpath.basename(rendered.file or "") or "inline",  # the message file, e.g. qr.j2
        "sop": f"{run.bundle.id}@{run.bundle.version}",
    }
    await enqueue(
        run.session,
        corp_id=run.corp_id,
        kind=CommandKind.SEND_WELCOME,
        key=key,
        payload=payload,
        deadline=event_time + WELCOME_WINDOW,
    )
    run.commands.append(key)
    await record_touch(
        run.session,
        run.corp_id,
        "contact",
        facts.external_userid,
        kind="welcome",
        source="welcome",
        ref=key,
        at=run.now,
        counts_cap=False,
    )


async def private_message(run: StepRun) -> None:
    facts = _contact(run)
    if not facts.relation_live or not facts.staff_userid:
        raise StepSkipped("no_relation")
    assert run.step.private_message is not None
    text, attachments = run.render(run.step.private_message)
    key = await run.command(
        CommandKind.ADD_MSG_TEMPLATE,
        {
            "chat_type": "single",
            "sender": facts.staff_userid,
            "external_userid": [facts.external_userid],
            "text": _text_payload(text),
            "attachments": attachments,
            "source": SOURCE,
            "ref": run.step_key,
        },
    )
    await record_touch(
        run.session,
        run.corp_id,
        "contact",
        facts.external_userid,
        kind="private_message",
        source=SOURCE,
        ref=key,
        at=run.now,
        counts_quota=True,
    )


def _truncate_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


async def advisor_task(run: StepRun) -> None:
    facts = _contact(run)
    if not facts.relation_live or not facts.staff_userid:
        raise StepSkipped("no_relation")
    task = run.step.advisor_task
    assert task is not None
    rendered = run.rendered(task)
    text, attachments = rendered.text, list(rendered.attachments)
    who = facts.remark or facts.name or facts.external_userid
    link = next((a["link"]["url"] for a in attachments if a.get("msgtype") == "link"), "")
    await run.command(
        CommandKind.SEND_APP_MESSAGE,
        {
            "touser": facts.staff_userid,
            "msgtype": "textcard",
            "textcard": {
                "title": rendered.title or task.title,
                "description": _truncate_bytes(f"客户：{who}\n建议发送：{text}", TEXTCARD_DESCRIPTION_MAX),
                "url": link or run.services.console_url,
                "btntxt": "去跟进",
            },
        },
    )
    await record_touch(
        run.session,
        run.corp_id,
        "contact",
        facts.external_userid,
        kind="advisor_task",
        source=SOURCE,
        ref=run.step_key,
        at=run.now,
    )


async def group_message(run: StepRun) -> None:
    facts = _group(run)
    if not facts.active or not facts.owner:
        raise StepSkipped("group_inactive")
    assert run.step.group_message is not None
    text, attachments = run.render(run.step.group_message)
    key = await run.command(
        CommandKind.ADD_MSG_TEMPLATE,
        {
            "chat_type": "group",
            "sender": facts.owner,
            "chat_id_list": [facts.chat_id],
            "text": _text_payload(text),
            "attachments": attachments,
            "source": SOURCE,
            "ref": run.step_key,
        },
    )
    await record_touch(
        run.session,
        run.corp_id,
        "group",
        facts.chat_id,
        kind="group_message",
        source=SOURCE,
        ref=key,
        at=run.now,
        counts_quota=True,
        counts_cap=False,
    )


async def resolve_tags(session: AsyncSession, corp_id: str, names: list[str]) -> dict[str, str]:
    """Tag references ("标签" or "组/标签") → tag ids, from the mirrored corp tags; unknown names are left out."""
    rows = await session.exec(
        select(Tag.tag_id, Tag.name, TagGroup.name)
        .join(TagGroup, (col(TagGroup.group_id) == col(Tag.group_id)) & (col(TagGroup.corp_id) == col(Tag.corp_id)))
        .where(Tag.corp_id == corp_id, col(Tag.deleted).is_(False))
    )
    by_name: dict[str, str] = {}
    for tag_id, tag_name, group_name in rows.all():
        by_name.setdefault(tag_name, tag_id)
        by_name[f"{group_name}/{tag_name}"] = tag_id
    return {name: by_name[name] for name in names if name in by_name}


async def tags(run: StepRun) -> None:
    facts = _contact(run)
    if not facts.relation_live or not facts.staff_userid:
        raise StepSkipped("no_relation")
    wanted_add, wanted_remove = list(run.step.add_tags or []), list(run.step.remove_tags or [])
    ids = await resolve_tags(run.session, run.corp_id, wanted_add + wanted_remove)
    missing = [n for n in wanted_add + wanted_remove if n not in ids]
    if missing:
        log.warning("SOP tag names not found among the corp tags", extra={"tags": missing, "sop": run.bundle.id})
    add = sorted({ids[n] for n in wanted_add if n in ids})
    remove = sorted({ids[n] for n in wanted_remove if n in ids} - set(add))
    if not add and not remove:
        raise StepSkipped("unknown_tags")
    await run.command(
        CommandKind.MARK_TAG,
        {"userid": facts.staff_userid, "external_userid": facts.external_userid, "add_tag": add, "remove_tag": remove},
    )
    # mark_tag made through the API produces no callback: mirror it now
    base = {"corp_id": run.corp_id, "external_userid": facts.external_userid, "userid": facts.staff_userid}
    conn = await run.session.connection()
    for tag_id in add:
        values = {**base, "tag_id": tag_id, "created_at": run.now}
        await conn.execute(insert_ignore(run.session, ContactTag, values, [*base, "tag_id"]))
    if remove:
        await (await run.session.connection()).execute(
            delete(ContactTag).where(
                col(ContactTag.corp_id) == run.corp_id,
                col(ContactTag.external_userid) == facts.external_userid,
                col(ContactTag.userid) == facts.staff_userid,
                col(ContactTag.tag_id).in_(remove),
            )
        )
    if add:  # a fact like any other tag change: contact.tagged templates may start
        await run.services.hooks.contact_tagged(
            run.session, run.corp_id, facts.external_userid, facts.staff_userid, add, run.now
        )


async def notify_staff(run: StepRun) -> None:
    notify = run.step.notify_staff
    assert notify is not None
    facts = run.facts
    owner = facts.staff_userid if isinstance(facts, ContactFacts) else facts.owner
    advisor = (facts.advisor_userid or facts.staff_userid) if isinstance(facts, ContactFacts) else facts.owner
    recipients = list(dict.fromkeys(owner if t == "owner" else advisor if t == "advisor" else t for t in notify.to))
    recipients = [r for r in recipients if r]
    if not recipients:
        raise StepSkipped("no_recipient")
    text, _ = run.render(Message(text=notify.text))
    for userid in recipients:
        await run.command(
            CommandKind.SEND_APP_MESSAGE,
            {"touser": userid, "msgtype": "text", "text": {"content": text}},
            suffix=userid,
        )


async def start_sop(run: StepRun) -> None:
    target_id = run.step.start_sop or ""
    target = run.services.holder.current().bundles.get(target_id)
    if target is None or not target.template.enabled or target.template.kind != run.bundle.template.kind:
        raise StepSkipped("start_sop_unavailable")
    await run.start(target)


async def end(run: StepRun) -> None:
    """Nothing to write: the engine ends the enrolment after this step."""


ACTIONS = {
    "welcome": welcome,
    "private_message": private_message,
    "advisor_task": advisor_task,
    "group_message": group_message,
    "add_tags": tags,
    "remove_tags": tags,
    "notify_staff": notify_staff,
    "start_sop": start_sop,
    "end": end,
}
