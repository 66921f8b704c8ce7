"""The campaign file operators write (YAML, Chinese messages in Jinja2), validated with positions.

Example (documented for operators in ``sop_templates/README.md`` under 群发活动; more in ``docs/campaigns/``)::

    code: weekend_test_drive
    name: 周末试驾活动
    chat_type: group                   # group: 客户群群发; single: 1v1 customers
    audience:                          # the SOP audience keys, plus created
      dealer: [BJ001, SH002]
      name: "*车友群*"
      members: {min: 10}
      created: {from: 2026-01-01}
    content:
      text: "{{ group.name }}的朋友们，本周六{{ dealer.name }}试驾日，欢迎到店！"
      attachments:
        - link: {title: 报名, url: "https://example.com/signup"}
    schedule: {at: "2026-12-05 19:00"}  # or {now: true}, or {cron: "0 19 * * 5", until: 2027-03-31}
    approval: true
    remind: {after: 2h, max: 3}
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_serializer, field_validator, model_validator

from scrm.audience import Audience
from scrm.config_file import ConfigFileError, load_config
from scrm.spec_fields import Attachment, Cron, Duration, StrictModel, at_most_nine, spec_error
from scrm.timing import CHINA_TZ, next_cron_fire

CODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
REMINDS_PER_DAY = 3  # WeCom: remind_groupmsg_send at most three times per message in 24 hours
TEXT_MAX_BYTES = 4000


class CampaignFileError(ConfigFileError):
    """A campaign file cannot be used; every problem is at ``file:line:col`` in Chinese."""


def _local_time(value: Any) -> Any:
    """``"2026-12-05 19:00"`` (China time) or an aware datetime → an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=CHINA_TZ)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("T", " "))
        except ValueError:
            raise spec_error("bad_time", f"时间格式无效：{value}，应为 2026-12-05 19:00") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=CHINA_TZ)
    raise spec_error("bad_time", "时间应写成 2026-12-05 19:00 这样的字符串")


LocalTime = Annotated[datetime, BeforeValidator(_local_time)]


class DateRange(StrictModel):
    """Inclusive local dates: ``{from: 2026-01-01, to: 2026-06-30}`` (either may be left out)."""

    from_: date | None = Field(default=None, alias="from")
    to: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.from_ and self.to and self.from_ > self.to:
            raise spec_error("bad_range", f"from（{self.from_}）不能晚于 to（{self.to}）")
        return self

    def contains(self, at: datetime | None) -> bool:
        if at is None:
            return self.from_ is None and self.to is None
        day = at.astimezone(CHINA_TZ).date()
        return (self.from_ is None or day >= self.from_) and (self.to is None or day <= self.to)


class CampaignAudience(Audience):
    """The SOP audience keys (tags, stage, intent_level, channel, staff, dealer / group_tags, name, members,
    owner) plus ``created``: when the group was created, or when the contact was added."""

    created: DateRange | None = None


class CampaignContent(StrictModel):
    """One Jinja2 text rendered per target, plus attachments (link fields may use variables too)."""

    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list)

    @field_validator("attachments")
    @classmethod
    def _at_most_nine(cls, value: list[Attachment]) -> list[Attachment]:
        return at_most_nine(value)

    @model_validator(mode="after")
    def _not_empty(self) -> CampaignContent:
        if not self.text.strip() and not self.attachments:
            raise spec_error("message_source", "content 需要 text 或至少一个附件")
        return self


class Schedule(StrictModel):
    """Exactly one of ``now: true``, ``at`` (China time) or ``cron`` (classic crontab, China time)."""

    now: bool = False
    at: LocalTime | None = None
    cron: Cron = None
    until: date | None = None  # last day a cron campaign fires (inclusive, local)

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        given = [k for k in ("now", "at", "cron") if getattr(self, k)]
        if len(given) != 1:
            raise spec_error("trigger_shape", "schedule 需要且只能有 now、at、cron 之一")  # no "schedule：" prefix
        if self.until is not None and not self.cron:
            raise spec_error("schedule_shape", "until 只能与 cron 一起使用")
        return self

    @property
    def kind(self) -> Literal["now", "at", "cron"]:
        return "now" if self.now else "at" if self.at else "cron"


class Remind(StrictModel):
    """Remind owners who have not confirmed: first ``after`` the task was created, then every ``after``;
    at most ``max`` reminders per task, never more than WeCom's three per 24 hours."""

    after: Duration = timedelta(hours=2)
    max: int = Field(default=3, ge=0, le=30)

    @field_validator("after")
    @classmethod
    def _at_least_a_minute(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise spec_error("bad_duration", "remind.after 至少 1m")
        return value

    @field_serializer("after")
    def _as_minutes(self, value: timedelta) -> str:
        return f"{int(value.total_seconds() // 60)}m"  # parse_duration's units are whole minutes and up


class CampaignSpec(StrictModel):
    code: str = Field(pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=128)
    chat_type: Literal["group", "single"]
    audience: CampaignAudience = Field(default_factory=CampaignAudience)
    content: CampaignContent
    schedule: Schedule
    approval: bool = False
    remind: Remind = Field(default_factory=Remind)

    @model_validator(mode="after")
    def _keys_fit_the_chat_type(self) -> CampaignSpec:
        a = self.audience
        if self.chat_type == "group":
            wrong = [k for k in ("tags", "stage", "intent_level", "channel", "staff") if getattr(a, k)]
            hint = "客户群群发请用 group_tags、name、members、owner、dealer、created"
        else:
            wrong = [k for k in ("group_tags", "name", "members", "owner") if getattr(a, k)]
            hint = "1v1 群发请用 tags、stage、intent_level、channel、staff、dealer、created"
        if wrong:
            raise spec_error(  # kind_mismatch: no "模板：" prefix; key: the position of the audience key
                "kind_mismatch",
                f"audience.{wrong[0]} 不适用于 chat_type {self.chat_type}；{hint}",
                key=f"audience.{wrong[0]}",
            )
        return self

    def spec_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.stored()).encode()).hexdigest()

    def stored(self) -> dict[str, Any]:
        """The JSON kept on the campaign row (``CampaignSpec.model_validate(stored)`` gives it back)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    def first_run_at(self, now: datetime) -> datetime | None:
        """When the first run is due: now, the ``at`` time, or the first cron fire after ``now``."""
        if self.schedule.now:
            return now
        if self.schedule.at is not None:
            return self.schedule.at.astimezone(UTC)
        assert self.schedule.cron is not None
        return self.within_until(next_cron_fire(self.schedule.cron, now - timedelta(seconds=1)))

    def within_until(self, fire: datetime | None) -> datetime | None:
        if fire is None or self.schedule.until is None:
            return fire
        return fire if fire.astimezone(CHINA_TZ).date() <= self.schedule.until else None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def load_campaign_file(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign file; raises :class:`CampaignFileError` with every problem."""
    return load_config(path, CampaignSpec, CampaignFileError)


def slot_of(fire: datetime, kind: str) -> str:
    """The run slot of a fire: ``now`` for a one-off "now" campaign, else the local minute of the fire."""
    if kind == "now":
        return "now"
    return fire.astimezone(CHINA_TZ).strftime("%Y-%m-%dT%H:%M")


_SLOT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")


def is_time_slot(slot: str) -> bool:
    return bool(_SLOT.match(slot))
