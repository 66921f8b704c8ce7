"""From a stored message or a recorded behaviour to signals, score, level, stage, tags and SOP triggers.

Called by ingestion inside its transaction, for newly stored facts only; replays are harmless anyway:
a message already classified is left alone, signals are unique per (corp, ref, code), and a behaviour
whose signal exists already changes nothing.

Signals of a message (``ref`` = ``msg:<source>:<msgid>``): one per intent code the classifier reported
(``other`` and codes weighted 0 in ``scoring.intent_weights`` give none). A positive weight is scaled by how
strongly the message expressed that intent, strength(code) = 1 − e^(−S(code)/saturation) with S(code) the
summed effective weight of its rules (the classifier's own score formula, per code); negative weights (lost,
complaint) count in full: a lost-lead signal is a fact, not a degree. Behaviours are worth
``scoring.behaviours[code]``.

Then the contact is rescored at ``now`` (:mod:`scrm.intent.scoring`): a LeadScoreChange with the top reasons
is written only when the score or the level changed; the stage moves 潜客 → 意向 when the level reaches
``INTENT_STAGE_LEVEL`` or hotter, and → 战败 when the event carried a ``scoring.lost_stage_on`` signal
(never for owners). Tags follow (:mod:`scrm.intent.tags`), then the SOP keyword trigger for messages.

A broken intent.yaml that never loaded does not stop ingestion: messages stay unclassified (the keyword
trigger still runs) and behaviours are weighted with the default ``scoring.behaviours``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.errors import DomainError
from scrm.intent import scoring
from scrm.intent.classifier import Classification, Classifier
from scrm.intent.rules import IntentRules, IntentRulesError
from scrm.intent.services import IntentServices
from scrm.intent.tags import TagMapping, sync_contact_tags
from scrm.lifecycle import LifecycleHooks, ReceivedMessage, change_intent_level, change_stage
from scrm.models import Contact, ContactTouch, IntentSignal, LeadScoreChange, Message, Stage
from scrm.rows import insert_ignore

log = logging.getLogger(__name__)

INTENT_STAGE_LEVEL = "A"  # 潜客 → 意向 once the level is A or H
OTHER = "other"
# behaviour kind given by ingestion → (IntentSignal.kind, scoring.behaviours key)
BEHAVIOURS: dict[str, tuple[str, str]] = {
    "click": ("click", "click"),
    "form": ("form", "form"),
    "test_drive_booking": ("form", "test_drive_booking"),
    "join": ("join", "join_group"),
    "join_group": ("join", "join_group"),
    "reply": ("reply", "reply"),
}
TEST_DRIVE_FORMS = frozenset({"test_drive", "test_drive_booking"})  # detail["form_type"] of a booking form


def score_rules(rules: IntentRules) -> scoring.ScoreRules:
    levels = rules.scoring.levels
    return scoring.ScoreRules(rules.scoring.half_life_days, {"H": levels.H, "A": levels.A, "B": levels.B})


def tag_mapping(rules: IntentRules) -> TagMapping:
    tags = rules.tags
    return TagMapping(tags.group, tags.level_group, tags.stage_group, tags.intents, tags.levels, tags.stages)


def message_signals(result: Classification, rules: IntentRules, *, ref: str, at: datetime) -> list[scoring.Signal]:
    """The signals one classified message gives (see the module docstring)."""
    strongest: dict[tuple[str, str], float] = {}
    for hit in result.hits:
        key = (hit.code, hit.rule)
        strongest[key] = max(strongest.get(key, 0.0), hit.weight)
    totals: dict[str, float] = {}
    best_rule: dict[str, tuple[float, str]] = {}
    for (code, rule), weight in strongest.items():
        totals[code] = totals.get(code, 0.0) + weight
        if weight > best_rule.get(code, (-1.0, ""))[0]:
            best_rule[code] = (weight, rule)
    saturation = rules.settings.saturation
    signals: list[scoring.Signal] = []
    for code in result.intents:
        weight = rules.scoring.intent_weights.get(code, 0.0)
        if code == OTHER or not weight:
            continue
        if weight > 0:
            weight *= 1 - math.exp(-totals.get(code, 0.0) / saturation)
        rule = best_rule.get(code, (0.0, ""))[1]
        signals.append(scoring.Signal(ref, code, rule, round(weight, 2), at, "message"))
    return signals


async def _insert_signals(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    signals: Sequence[scoring.Signal],
    detail: Mapping[str, Any] | None,
) -> list[scoring.Signal]:
    """Insert-ignore by (corp, ref, code); returns the signals that were new."""
    conn = await session.connection()
    inserted: list[scoring.Signal] = []
    for signal in signals:
        values = {
            "corp_id": corp_id,
            "external_userid": external_userid,
            "kind": signal.kind,
            "code": signal.code,
            "ref": signal.ref,
            "rule": signal.rule,
            "weight": signal.weight,
            "at": signal.at,
            "detail": dict(detail) if detail else None,
        }
        result = await conn.execute(insert_ignore(session, IntentSignal, values, ["corp_id", "ref", "code"]))
        if result.rowcount:
            inserted.append(signal)
    return inserted


async def _active_contact(session: AsyncSession, corp_id: str, external_userid: str, at: datetime) -> Contact | None:
    contact = (
        await session.exec(
            select(Contact).where(Contact.corp_id == corp_id, Contact.external_userid == external_userid)
        )
    ).first()
    if contact is not None and (contact.last_active_at is None or contact.last_active_at < at):
        contact.last_active_at = at
        session.add(contact)
    return contact


async def contact_signals(
    session: AsyncSession, corp_id: str, external_userid: str, *, since: datetime
) -> list[scoring.Signal]:
    rows = await session.exec(
        select(IntentSignal).where(
            IntentSignal.corp_id == corp_id,
            IntentSignal.external_userid == external_userid,
            col(IntentSignal.at) >= since,
        )
    )
    return [scoring.Signal(r.ref, r.code, r.rule, r.weight, r.at, r.kind) for r in rows.all()]


async def rescore(
    session: AsyncSession,
    corp_id: str,
    contact: Contact,
    rules: IntentRules,
    *,
    now: datetime,
    lost: bool,
    hooks: LifecycleHooks,
) -> scoring.LeadScore:
    """Score the contact at ``now`` and apply score, level and stage (see the module docstring)."""
    settings = score_rules(rules)
    signals = await contact_signals(session, corp_id, contact.external_userid, since=now - settings.horizon)
    result = scoring.score(signals, now, settings)
    score_before, level_before, stage_before = contact.score, contact.intent_level or "", contact.stage
    stage_after = stage_before
    if lost and stage_before not in (Stage.OWNER.value, Stage.LOST.value):
        stage_after = Stage.LOST.value
    elif stage_before == Stage.PROSPECT.value and scoring.level_at_least(result.level, INTENT_STAGE_LEVEL):
        stage_after = Stage.INTENT.value
    ext = contact.external_userid
    if result.score != score_before or result.level != level_before:
        session.add(
            LeadScoreChange(
                corp_id=corp_id,
                external_userid=ext,
                score_before=score_before,
                score_after=result.score,
                level_before=level_before,
                level_after=result.level,
                stage_before=stage_before,
                stage_after=stage_after,
                reasons=[r.as_json() for r in result.reasons],
                at=now,
            )
        )
        await change_intent_level(session, corp_id, ext, result.level, at=now, score=result.score, hooks=hooks)
    if stage_after != stage_before:
        reason = "lost_signal" if stage_after == Stage.LOST.value else f"level_{result.level}"
        await change_stage(session, corp_id, ext, stage_after, at=now, reason=reason, hooks=hooks)
    return result


async def _after_signals(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    rules: IntentRules,
    new: Sequence[scoring.Signal],
    *,
    at: datetime,
    now: datetime,
    ref: str,
    hooks: LifecycleHooks,
) -> None:
    """Mark the contact active, rescore it, then bring its tags in line."""
    contact = await _active_contact(session, corp_id, external_userid, at)
    if contact is None:  # a 微信客服 customer who is not (yet) a contact: the signals wait for them
        return
    lost = any(s.code in rules.scoring.lost_stage_on for s in new)
    await rescore(session, corp_id, contact, rules, now=now, lost=lost, hooks=hooks)
    await sync_contact_tags(session, corp_id, contact, tag_mapping(rules), now=now, ref=ref, hooks=hooks)


async def on_message_stored(
    session: AsyncSession,
    corp_id: str,
    message: Message,
    *,
    intent: IntentServices,
    hooks: LifecycleHooks,
    now: datetime,
) -> None:
    """A newly stored message: classify a customer's text, score, tag, and run the SOP keyword trigger. A staff
    member's message to a customer may be the first contact on their lead (the ``staff_messaged`` hook)."""
    if message.sender_type == "staff":
        await hooks.staff_messaged(session, corp_id, message, now)
    if message.sender_type != "customer" or message.msgtype != "text" or not message.external_userid:
        return
    if message.classified_at is not None:  # a replay: everything below was done the first time
        return
    classifier = _classifier(intent)
    if classifier is not None:
        await _classify_and_score(session, corp_id, message, classifier, now=now, hooks=hooks)
    push = await _recent_push(session, corp_id, message.external_userid, message.sent_at)
    if push is not None:  # answering a push we sent: engagement, counted once per push
        await on_behaviour(
            session,
            corp_id,
            message.external_userid,
            kind="reply",
            ref=f"reply:{push}",
            at=message.sent_at,
            detail={"push": push, "msgid": message.msgid},
            intent=intent,
            hooks=hooks,
            now=now,
        )
    received = ReceivedMessage(
        msgid=message.msgid,
        text=message.text,
        chat_type=message.chat_type,
        chat_id=message.chat_id,
        external_userid=message.external_userid,
        userid=message.userid,
        at=message.sent_at,
    )
    await hooks.message_stored(session, corp_id, received)


REPLY_WINDOW = timedelta(hours=48)  # a customer message this soon after a push to them is a reply to it


async def _recent_push(session: AsyncSession, corp_id: str, external_userid: str, at: datetime) -> str | None:
    """The ledger ref of the latest push (SOP, campaign or advisor message) the customer got within the reply
    window before ``at``, or None."""
    row = (
        await session.exec(
            select(ContactTouch.ref)
            .where(
                ContactTouch.corp_id == corp_id,
                ContactTouch.recipient_type == "contact",
                ContactTouch.recipient_id == external_userid,
                col(ContactTouch.kind).in_(("private_message", "advisor_task", "group_message")),
                col(ContactTouch.at) <= at,
                col(ContactTouch.at) >= at - REPLY_WINDOW,
            )
            .order_by(col(ContactTouch.at).desc())
            .limit(1)
        )
    ).first()
    return str(row) if row is not None else None


def _classifier(intent: IntentServices) -> Classifier | None:
    """The folder's classifier; None when intent.yaml is broken and never loaded (the message stays
    unclassified rather than the ingestion failing; ``lianyi sop check`` says what is wrong)."""
    try:
        return intent.classifier()
    except IntentRulesError as exc:
        log.error("intent rules unusable, message left unclassified: %s", exc)
        return None


async def _classify_and_score(
    session: AsyncSession,
    corp_id: str,
    message: Message,
    classifier: Classifier,
    *,
    now: datetime,
    hooks: LifecycleHooks,
) -> None:
    rules = classifier.rules
    result = classifier.classify(message.text)
    message.intents = list(result.intents)
    message.primary_intent = result.primary
    message.intent_score = result.score
    message.classified_at = now
    session.add(message)
    ref = f"msg:{message.source}:{message.msgid}"
    signals = message_signals(result, rules, ref=ref, at=message.sent_at)
    detail: dict[str, Any] = {"msgid": message.msgid, "score": result.score}
    if result.negated or result.hedged:
        detail.update(negated=result.negated, hedged=result.hedged)
    if result.hints:
        detail["hints"] = result.hints
    new = await _insert_signals(session, corp_id, message.external_userid, signals, detail)
    await _after_signals(
        session, corp_id, message.external_userid, rules, new, at=message.sent_at, now=now, ref=ref, hooks=hooks
    )


def behaviour_signal(
    rules: IntentRules, kind: str, ref: str, at: datetime, detail: Mapping[str, Any] | None
) -> scoring.Signal:
    """The signal of a behaviour: click, form (``detail["form_type"]`` test_drive → a test-drive booking),
    test_drive_booking, join / join_group, reply."""
    if kind not in BEHAVIOURS:
        raise DomainError(f"未知的行为类型 {kind!r}，可选：{'、'.join(BEHAVIOURS)}")
    signal_kind, code = BEHAVIOURS[kind]
    if code == "form" and str((detail or {}).get("form_type") or "") in TEST_DRIVE_FORMS:
        code = "test_drive_booking"
    weight = float(rules.scoring.behaviours.get(code, 0.0))
    return scoring.Signal(ref, code, f"behaviour:{code}", weight, at, signal_kind)


async def on_behaviour(
    session: AsyncSession,
    corp_id: str,
    external_userid: str,
    *,
    kind: str,
    ref: str,
    at: datetime,
    detail: Mapping[str, Any] | None = None,
    intent: IntentServices,
    hooks: LifecycleHooks,
    now: datetime | None = None,
) -> None:
    """A click, form, test-drive booking, group join or reply: a signal, then score and tags at ``now``
    (default ``at``). ``ref`` names the fact (e.g. ``click:<token>:<n>``); a known ref changes nothing."""
    classifier = _classifier(intent)
    rules = classifier.rules if classifier is not None else IntentRules()  # default weights, documented
    signal = behaviour_signal(rules, kind, ref, at, detail)
    new = await _insert_signals(session, corp_id, external_userid, [signal], detail)
    if not new:
        return
    await _after_signals(session, corp_id, external_userid, rules, new, at=at, now=now or at, ref=ref, hooks=hooks)
    await hooks.behaviour_recorded(session, corp_id, external_userid, signal.code, now or at)
