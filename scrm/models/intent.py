"""What customers say and do: ingested messages, the intent signals drawn from them, and the score history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from scrm.models._base import json_field, ts_field


class Message(SQLModel, table=True):
    """One chat message from any source, deduplicated by (corp, source, msgid).

    source: kf (微信客服 sync_msg) | aibot (智能机器人 callbacks) | app (self-built app messages) | archive
    (会话内容存档 puller through the ingest endpoint or ``lianyi ingest messages``).
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("corp_id", "source", "msgid", name="uq_messages_source_msgid"),
        Index("ix_messages_contact_time", "corp_id", "external_userid", "sent_at"),
        Index("ix_messages_chat_time", "corp_id", "chat_id", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    source: str = Field(max_length=16)
    msgid: str = Field(max_length=128)
    chat_type: str = Field(default="single", max_length=16)  # single | group
    chat_id: str = Field(default="", max_length=128)  # group chat id (group messages)
    external_userid: str = Field(default="", max_length=128)  # the customer (sender or counterpart)
    userid: str = Field(default="", max_length=64)  # the staff member (sender or counterpart)
    sender_type: str = Field(default="customer", max_length=16)  # customer | staff | bot
    msgtype: str = Field(default="text", max_length=32)
    text: str = Field(default="")
    sent_at: datetime = ts_field(default_now=True)
    received_at: datetime = ts_field(default_now=True)
    payload: dict[str, Any] | None = json_field()
    # classification (customer text messages)
    intents: list[str] | None = json_field()
    primary_intent: str | None = Field(default=None, max_length=32)
    intent_score: int | None = Field(default=None)
    classified_at: datetime | None = ts_field()


class IntentSignal(SQLModel, table=True):
    """One piece of evidence about a contact's purchase intent: a classified message, a click, a form, a group
    join, a reply to a push. ``ref`` names the source fact (e.g. ``msg:<source>:<msgid>``), so replays add
    nothing; ``weight`` is the points it is worth before decay."""

    __tablename__ = "intent_signals"
    __table_args__ = (
        UniqueConstraint("corp_id", "ref", "code", name="uq_intent_signal_ref_code"),
        Index("ix_intent_signals_contact_time", "corp_id", "external_userid", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    external_userid: str = Field(max_length=128)
    kind: str = Field(max_length=16)  # message | click | form | join | reply
    code: str = Field(max_length=32)  # intent code (price, test_drive, lost, …) or behaviour (click, form…)
    ref: str = Field(max_length=255)
    rule: str = Field(default="", max_length=128)  # the rule that fired (intent.yaml id)
    weight: float = Field(default=0.0)
    at: datetime = ts_field(default_now=True)
    detail: dict[str, Any] | None = json_field()


class LeadScoreChange(SQLModel, table=True):
    """Every change of a contact's score or level, with the reasons (signals, rules, points) behind it."""

    __tablename__ = "lead_score_changes"
    __table_args__ = (Index("ix_lead_score_changes_contact", "corp_id", "external_userid", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    corp_id: str = Field(max_length=64)
    external_userid: str = Field(max_length=128)
    score_before: int = Field(default=0)
    score_after: int = Field(default=0)
    level_before: str = Field(default="", max_length=1)
    level_after: str = Field(default="", max_length=1)
    stage_before: str = Field(default="", max_length=16)
    stage_after: str = Field(default="", max_length=16)
    reasons: list[dict[str, Any]] = json_field(default=[])
    at: datetime = ts_field(default_now=True)
