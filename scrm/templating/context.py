"""The variables and filters every SOP message template sees.

Variables (always present; what is not known is an empty string, an empty list or dict, or 0):

- ``contact``: ``external_userid``, ``name``, ``remark``, ``stage`` (prospect/intent/owner/lost),
  ``stage_cn`` (潜客/意向/车主/战败), ``intent_level`` (H/A/B/C), ``score``, ``tags`` (tag names),
  ``channel``, ``added_at``, and ``corp_id`` (used for tracked links, not meant for customer text)
- ``staff``: ``userid``, ``name``
- ``dealer``: ``code``, ``name``, ``city``, ``address``, ``phone``, ``hours``, ``answers`` (topic → text)
- ``group``: ``chat_id``, ``name``, ``owner``, ``owner_name``, ``member_count``
- ``lead``: ``status``, ``level``, ``advisor``, ``advisor_name``
- ``trigger``: ``event``, ``text``, ``keyword``, ``tag``, ``stage``, ``level``, ``days``
- ``now``: the current time in Asia/Shanghai

Filters (:func:`install_filters`): ``date`` (strftime, default ``%Y年%-m月%-d日``), ``cn_date``
(``11月23日``, or with the year), ``weekday_cn`` (``周一``), ``mask_phone`` (``138****5678``),
``mask_name`` (``王**``), ``days_since`` and ``days_until`` (calendar days in China time, relative to
``now``), ``day_part`` and ``greeting`` (the time of day in China time, :data:`DAY_PARTS`: ``now | greeting`` is
``早上好`` at 08:00 and ``您好`` at 02:47). Every filter turns an empty value (``""``/``None``) into ``""`` so
sparse contacts render.

Functions (:class:`AttachmentCollector`): ``attach_link(title, url, desc="", picurl="")``,
``attach_image(pic_url)`` and ``attach_miniprogram(title, appid, page, pic_media_id)`` add an attachment in
WeCom's shape and print nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, pass_context
from jinja2.runtime import Context

CHINA_TZ = ZoneInfo("Asia/Shanghai")
STAGE_CN: Mapping[str, str] = {"prospect": "潜客", "intent": "意向", "owner": "车主", "lost": "战败"}
WEEKDAYS_CN = ("一", "二", "三", "四", "五", "六", "日")
DEFAULT_DATE_FORMAT = "%Y年%-m月%-d日"
# (first hour, part of the day, greeting) in China time, each band up to the next one's first hour; in the
# small hours nobody is greeted "good morning": 凌晨 gets a plain 您好
DAY_PARTS: tuple[tuple[int, str, str], ...] = (
    (0, "凌晨", "您好"),
    (5, "早上", "早上好"),
    (11, "中午", "中午好"),
    (13, "下午", "下午好"),
    (18, "晚上", "晚上好"),
)

# top-level variable → its keys with the empty default
_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "contact": {
        "external_userid": "",
        "name": "",
        "remark": "",
        "stage": "",
        "stage_cn": "",
        "intent_level": "",
        "score": 0,
        "tags": [],
        "channel": "",
        "added_at": "",
        "corp_id": "",
    },
    "staff": {"userid": "", "name": ""},
    "dealer": {"code": "", "name": "", "city": "", "address": "", "phone": "", "hours": "", "answers": {}},
    "group": {"chat_id": "", "name": "", "owner": "", "owner_name": "", "member_count": 0},
    "lead": {"status": "", "level": "", "advisor": "", "advisor_name": ""},
    "trigger": {"event": "", "text": "", "keyword": "", "tag": "", "stage": "", "level": "", "days": 0},
}
VARIABLES: frozenset[str] = frozenset({*_DEFAULTS, "now"})
# every documented key per variable (the checker's list of known attributes)
VARIABLE_KEYS: Mapping[str, frozenset[str]] = {name: frozenset(keys) for name, keys in _DEFAULTS.items()}


def _fresh(value: Any) -> Any:
    """A new list/dict for mutable defaults, so contexts never share them."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _fill(name: str, given: Mapping[str, Any] | object | None) -> dict[str, Any]:
    """The defaults of ``name`` overlaid with ``given`` (a mapping, or an object read attribute by attribute);
    ``None`` values become the key's empty default."""
    defaults = _DEFAULTS[name]
    merged = {key: _fresh(value) for key, value in defaults.items()}
    if given is None:
        return merged
    if isinstance(given, Mapping):
        items = dict(given)
    else:
        items = {key: getattr(given, key) for key in defaults if hasattr(given, key)}
    for key, value in items.items():
        merged[key] = _fresh(defaults.get(key, "")) if value is None else value
    return merged


def build_context(
    *,
    contact: Mapping[str, Any] | object | None = None,
    staff: Mapping[str, Any] | object | None = None,
    dealer: Mapping[str, Any] | object | None = None,
    group: Mapping[str, Any] | object | None = None,
    lead: Mapping[str, Any] | object | None = None,
    trigger: Mapping[str, Any] | object | None = None,
    now: datetime,
    corp_id: str = "",
) -> dict[str, Any]:
    """Every documented variable, empty where unknown; ``now`` is converted to China time.

    ``corp_id`` (or a ``corp_id`` key of ``contact``) is what tracked links are signed for.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    filled = {
        "contact": _fill("contact", contact),
        "staff": _fill("staff", staff),
        "dealer": _fill("dealer", dealer),
        "group": _fill("group", group),
        "lead": _fill("lead", lead),
        "trigger": _fill("trigger", trigger),
    }
    person = filled["contact"]
    if corp_id and not person["corp_id"]:
        person["corp_id"] = corp_id
    if not person["stage_cn"]:
        person["stage_cn"] = STAGE_CN.get(str(person["stage"]), "")
    person["tags"] = list(person["tags"] or [])
    filled["dealer"]["answers"] = dict(filled["dealer"]["answers"] or {})
    return {**filled, "now": now.astimezone(CHINA_TZ)}


# ---- filters ----------------------------------------------------------------------------------------------

_UNPADDED = re.compile(r"%-([mdHIMSj])")


def _as_moment(value: Any) -> datetime | date | None:
    """A datetime (in China time) or a date from a datetime, date or ISO string; None for empty values."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(CHINA_TZ) if value.tzinfo else value
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"不是日期或时间：{text}") from None
    if len(text) <= 10:  # "2026-05-01": a calendar day, not midnight UTC
        return parsed.date()
    return parsed.astimezone(CHINA_TZ) if parsed.tzinfo else parsed


def _local_day(value: Any) -> date | None:
    moment = _as_moment(value)
    if moment is None:
        return None
    return moment.date() if isinstance(moment, datetime) else moment


def format_date(value: Any, fmt: str = DEFAULT_DATE_FORMAT) -> str:
    """strftime in China time; ``%-m``/``%-d``/``%-H``… (no zero padding) work on every platform."""
    moment = _as_moment(value)
    if moment is None:
        return ""
    stamp = moment if isinstance(moment, datetime) else datetime.combine(moment, time())

    def unpadded(match: re.Match[str]) -> str:
        return str(int(stamp.strftime(f"%{match.group(1)}")))

    return stamp.strftime(_UNPADDED.sub(unpadded, fmt))


def cn_date(value: Any, with_year: bool = False) -> str:
    """``11月23日``, or ``2026年11月23日`` with ``with_year=true``."""
    day = _local_day(value)
    if day is None:
        return ""
    prefix = f"{day.year}年" if with_year else ""
    return f"{prefix}{day.month}月{day.day}日"


def weekday_cn(value: Any, prefix: str = "周") -> str:
    """``周一`` … ``周日`` (``prefix="星期"`` gives ``星期一``)."""
    day = _local_day(value)
    if day is None:
        return ""
    return f"{prefix}{WEEKDAYS_CN[day.weekday()]}"


def mask_phone(value: Any) -> str:
    """``13812345678`` → ``138****5678``; short numbers keep only their last two digits."""
    digits = str(value or "").strip()
    if not digits:
        return ""
    if len(digits) >= 8:
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * max(len(digits) - 2, 1) + digits[-2:] if len(digits) > 2 else "*" * len(digits)


def mask_name(value: Any) -> str:
    """``王小明`` → ``王**``; a one-character name becomes ``王*``."""
    name = str(value or "").strip()
    if not name:
        return ""
    return name[0] + "*" * max(len(name) - 1, 1)


def _today(context: Context) -> date:
    now = context.get("now")
    if isinstance(now, datetime):
        return now.astimezone(CHINA_TZ).date() if now.tzinfo else now.date()
    return datetime.now(CHINA_TZ).date()


@pass_context
def days_since(context: Context, value: Any) -> int | str:
    """Whole calendar days from ``value`` to ``now`` (China time); ``""`` when ``value`` is empty."""
    day = _local_day(value)
    return "" if day is None else (_today(context) - day).days


@pass_context
def days_until(context: Context, value: Any) -> int | str:
    """Whole calendar days from ``now`` to ``value`` (China time); ``""`` when ``value`` is empty."""
    day = _local_day(value)
    return "" if day is None else (day - _today(context)).days


def _day_band(value: Any) -> tuple[int, str, str] | None:
    moment = _as_moment(value)
    if not isinstance(moment, datetime):
        return None
    hour = moment.astimezone(CHINA_TZ).hour if moment.tzinfo else moment.hour  # naive: China time, as elsewhere
    return next(band for band in reversed(DAY_PARTS) if hour >= band[0])


def day_part(value: Any) -> str:
    """The part of the day of a time in China time: 凌晨 (0–5), 早上 (5–11), 中午 (11–13), 下午 (13–18),
    晚上 (18–24)."""
    band = _day_band(value)
    return "" if band is None else band[1]


def greeting(value: Any) -> str:
    """The greeting for a time in China time: 您好 (凌晨), 早上好, 中午好, 下午好, 晚上好."""
    band = _day_band(value)
    return "" if band is None else band[2]


FILTERS: Mapping[str, Callable[..., Any]] = {
    "day_part": day_part,
    "greeting": greeting,
    "date": format_date,
    "cn_date": cn_date,
    "weekday_cn": weekday_cn,
    "mask_phone": mask_phone,
    "mask_name": mask_name,
    "days_since": days_since,
    "days_until": days_until,
}


def install_filters(env: Environment) -> None:
    """Register the SOP filters on ``env``."""
    env.filters.update(FILTERS)


# ---- functions ------------------------------------------------------------------------------------------


class AttachmentCollector:
    """Attachments added by ``attach_*`` calls during one render."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def functions(self) -> dict[str, Callable[..., str]]:
        return {"attach_link": self.link, "attach_image": self.image, "attach_miniprogram": self.miniprogram}

    def link(self, title: str, url: str, desc: str = "", picurl: str = "") -> str:
        self.items.append(link_attachment(title, url, desc, picurl))
        return ""

    def image(self, pic_url: str) -> str:
        self.items.append({"msgtype": "image", "image": {"pic_url": pic_url}})
        return ""

    def miniprogram(self, title: str, appid: str, page: str, pic_media_id: str) -> str:
        mini = {"title": title, "appid": appid, "page": page, "pic_media_id": pic_media_id}
        self.items.append({"msgtype": "miniprogram", "miniprogram": mini})
        return ""


def link_attachment(title: str, url: str, desc: str = "", picurl: str = "") -> dict[str, Any]:
    """A link attachment as add_msg_template / send_welcome_msg take it (empty desc/picurl left out)."""
    link = {"title": title, "url": url, **({"desc": desc} if desc else {}), **({"picurl": picurl} if picurl else {})}
    return {"msgtype": "link", "link": link}


# ---- sample data for checks -------------------------------------------------------------------------------

SAMPLE_NOW = datetime(2026, 5, 8, 10, 30, tzinfo=CHINA_TZ)  # a Friday morning

SAMPLE_CONTEXT: Mapping[str, Any] = build_context(
    contact={
        "external_userid": "wmSAMPLE0000000000000001",
        "name": "王建国",
        "remark": "王先生 朗逸 意向",
        "stage": "intent",
        "intent_level": "A",
        "score": 72,
        "tags": ["意向-试驾", "A"],
        "channel": "qr",
        "added_at": datetime(2026, 5, 1, 9, 15, tzinfo=CHINA_TZ),
    },
    staff={"userid": "zhangsan", "name": "张三"},
    dealer={
        "code": "BJ001",
        "name": "北京望京汽车4S店",
        "city": "北京",
        "address": "北京市朝阳区望京北路 18 号",
        "phone": "010-64701234",
        "hours": "每天 9:00–18:00",
        "answers": {
            "price": "本月全系享厂家补贴最高 2 万元，另有置换补贴和 0 首付金融方案，具体车型落地价我帮您单独算。",
            "test_drive": "试驾车每天都有，提前一天预约即可，到店约 1 小时，需要带上驾驶证。",
            "address": "我们在北京市朝阳区望京北路 18 号，营业时间每天 9:00–18:00，导航搜“望京汽车4S店”即可。",
        },
    },
    group={
        "chat_id": "wrSAMPLE000001",
        "name": "望京车友群1群",
        "owner": "zhangsan",
        "owner_name": "张三",
        "member_count": 186,
    },
    lead={"status": "assigned", "level": "A", "advisor": "zhangsan", "advisor_name": "张三"},
    trigger={
        "event": "message.keyword",
        "text": "这车落地价多少钱？",
        "keyword": "多少钱",
        "tag": "",
        "stage": "",
        "level": "A",
        "days": 14,
    },
    now=SAMPLE_NOW,
    corp_id="wwSAMPLECORP",
)
