"""The building blocks of the SOP template format: value types with operator-friendly parsing (durations,
clock times, weekdays, cron, dates, regexes, "one or many" names) and the message models (text, files,
attachments). :mod:`scrm.sop.spec` assembles them into templates."""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from scrm.timing import parse_clock, parse_duration, parse_weekdays, validate_cron

ATTACHMENTS_MAX = 9

Level = Literal["H", "A", "B", "C"]
StageName = Literal["prospect", "intent", "owner", "lost"]


def spec_error(code: str, message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(code, message, context or None)


def _as_list(value: Any) -> Any:
    """Operators write ``channel: ad`` as often as ``channel: [ad]``."""
    if value is None:
        return []
    if isinstance(value, str | int):
        return [value]
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str | int):
        raise spec_error("bad_duration", "时长应写成 30m / 2h / 3d / 1w 这样的字符串")
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise spec_error("bad_duration", str(exc)) from None


def _clock(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if isinstance(value, int):  # YAML 1.1 reads 10:00 unquoted as the sexagesimal integer 600
        value = f"{value // 60:02d}:{value % 60:02d}"
    try:
        return parse_clock(str(value))
    except ValueError as exc:
        raise spec_error("bad_time", str(exc)) from None


def _weekdays(value: Any) -> Any:
    if isinstance(value, frozenset):
        return value
    try:
        return parse_weekdays(_as_list(value))
    except ValueError as exc:
        raise spec_error("bad_weekday", str(exc)) from None


def _regex(value: Any) -> Any:
    if value is None:
        return None
    try:
        re.compile(str(value))
    except re.error as exc:
        raise spec_error("bad_regex", f"正则表达式无效：{exc}") from None
    return str(value)


def _cron(value: Any) -> Any:
    if value is None:
        return None
    problem = validate_cron(str(value))
    if problem:
        raise spec_error("bad_cron", problem)
    return str(value)


def _dates(value: Any) -> Any:
    out: list[date] = []
    for item in _as_list(value):
        if isinstance(item, date):
            out.append(item)
            continue
        try:
            out.append(date.fromisoformat(str(item)))
        except ValueError:
            raise spec_error("bad_date", f"日期格式无效：{item}，应为 2026-02-17 这样的 YYYY-MM-DD") from None
    return out


Names = Annotated[list[str], BeforeValidator(_as_list)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
ClockTime = Annotated[time, BeforeValidator(_clock)]
Weekdays = Annotated[frozenset[int], BeforeValidator(_weekdays)]
Regex = Annotated[str | None, BeforeValidator(_regex)]
Cron = Annotated[str | None, BeforeValidator(_cron)]
Dates = Annotated[list[date], BeforeValidator(_dates)]
Levels = Annotated[list[Level], BeforeValidator(_as_list)]
Stages = Annotated[list[StageName], BeforeValidator(_as_list)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ---- messages ---------------------------------------------------------------------------------------------


class LinkAttachment(StrictModel):
    title: str = Field(min_length=1, max_length=128)
    url: str = Field(pattern=r"^https?://")
    desc: str = ""
    picurl: str = ""


class ImageAttachment(StrictModel):
    pic_url: str = ""
    media_id: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> ImageAttachment:
        if bool(self.pic_url) == bool(self.media_id):
            raise spec_error("bad_attachment", "图片附件需要 pic_url 或 media_id 之一")
        return self


class MiniProgramAttachment(StrictModel):
    title: str = Field(min_length=1, max_length=64)
    appid: str = Field(min_length=1)
    page: str = Field(min_length=1)
    pic_media_id: str = Field(min_length=1)


class Attachment(StrictModel):
    """Exactly one of ``image``, ``link``, ``miniprogram``."""

    image: ImageAttachment | None = None
    link: LinkAttachment | None = None
    miniprogram: MiniProgramAttachment | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Attachment:
        given = [k for k in ("image", "link", "miniprogram") if getattr(self, k) is not None]
        if len(given) != 1:
            raise spec_error("bad_attachment", "每个附件只能是 image、link、miniprogram 之一")
        return self


def at_most_nine(attachments: list[Attachment]) -> list[Attachment]:
    """WeCom takes at most nine attachments per message."""
    if len(attachments) > ATTACHMENTS_MAX:
        raise spec_error("too_many_attachments", f"附件最多 {ATTACHMENTS_MAX} 个，这里有 {len(attachments)} 个")
    return attachments


class Message(StrictModel):
    """Text inline (``text``), from a file (``file``) or chosen by channel (``by_channel``: a folder with
    ``<channel>.j2`` files and a ``default.j2``), plus attachments."""

    text: str | None = None
    file: str | None = None
    by_channel: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)

    @field_validator("attachments")
    @classmethod
    def _at_most_nine(cls, value: list[Attachment]) -> list[Attachment]:
        return at_most_nine(value)

    @model_validator(mode="after")
    def _one_source(self) -> Message:
        sources = [k for k in ("text", "file", "by_channel") if getattr(self, k)]
        if len(sources) > 1:
            raise spec_error("message_source", "text、file、by_channel 只能选一个")
        if not sources and not self.attachments:
            raise spec_error("message_source", "消息需要 text、file 或 by_channel，或至少一个附件")
        return self

    @property
    def source_text(self) -> str | None:
        return self.text


class AdvisorTask(Message):
    """An app textcard to the contact's staff member with the text to send (the seeds' SOP card)."""

    title: str = Field(default="SOP 跟进任务", max_length=128)


class NotifyStaff(StrictModel):
    """An app message to staff: ``to`` = owner (the contact's staff member or the group owner), advisor
    (the channel's advisor), or explicit userids."""

    to: Names = Field(default_factory=lambda: ["owner"])
    text: str = Field(min_length=1)
