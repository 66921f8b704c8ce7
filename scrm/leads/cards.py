"""What advisors and managers read: the Chinese titles and texts of lead notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from scrm.models import Contact, Lead

STATUS_NAMES: dict[str, str] = {
    "pool": "公海",
    "waiting": "待营业分配",
    "assigned": "待接单",
    "accepted": "已接单",
    "contacted": "已联系",
    "test_drive_booked": "已预约试驾",
    "test_drive_done": "已试驾",
    "test_drive_no_show": "试驾未到店",
    "ordered": "已下订",
    "delivered": "已交车",
    "lost_pending": "战败待审批",
    "lost": "已战败",
}
TRIGGER_NAMES: dict[str, str] = {
    "level_H": "意向等级升至 H",
    "level_A": "意向等级升至 A",
    "level_B": "意向等级升至 B",
    "level_C": "意向等级升至 C",
    "test_drive_booking": "预约试驾",
    "form": "留资",
    "manual": "人工指派",
}
CODE_NAMES: dict[str, str] = {
    "price": "问价格",
    "finance": "问金融/贷款",
    "test_drive": "想试驾",
    "trade_in": "问置换",
    "delivery": "问提车/交付",
    "config": "问配置",
    "purchase": "有购买意向",
    "after_sales": "问售后",
    "complaint": "投诉",
    "click": "点击链接",
    "form": "留资",
    "test_drive_booking": "预约试驾",
    "join": "入群",
    "join_group": "入群",
    "reply": "回复推送",
}


def who(contact: Contact | None, lead: Lead) -> str:
    name = (contact.name if contact is not None else "") or "客户"
    return f"{name}（{lead.level or '-'} 级，{lead.score} 分）"


def reason_lines(reasons: Sequence[dict[str, Any]] | None, limit: int = 3) -> str:
    """The top reasons, e.g. "问价格、想试驾"."""
    names: list[str] = []
    for reason in reasons or []:
        name = CODE_NAMES.get(str(reason.get("code", "")), "")
        if name and name not in names and float(reason.get("points", 0) or 0) > 0:
            names.append(name)
        if len(names) == limit:
            break
    return "、".join(names) or "综合意向评分高"


def local_time(at: datetime | None, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M") if at is not None else "-"


def new_lead(lead: Lead, contact: Contact | None, *, tz: str, reach_hint: str) -> tuple[str, str]:
    title = f"新线索：{who(contact, lead)}"
    lines = [
        f"来源：{TRIGGER_NAMES.get(lead.trigger, lead.trigger)}{'（' + lead.channel + '）' if lead.channel else ''}",
        f"意向理由：{reason_lines(lead.reasons)}",
    ]
    if lead.asked:
        lines.append(f"客户说：{lead.asked}")
    lines.append(f"请在 {local_time(lead.sla_deadline_at, tz)} 前接单")
    if reach_hint:
        lines.append(reach_hint)
    return title, "\n".join(lines)


def reminder(lead: Lead, contact: Contact | None, *, phase: str, tz: str) -> tuple[str, str]:
    if phase == "accept":
        return (
            f"线索待接单提醒：{who(contact, lead)}",
            f"已超过接单时限（{local_time(lead.sla_deadline_at, tz)}），请立即接单。",
        )
    return (
        f"线索待联系提醒：{who(contact, lead)}",
        f"已超过首次联系时限（{local_time(lead.sla_deadline_at, tz)}），请尽快联系客户。",
    )


def manager_escalation(lead: Lead, contact: Contact | None, *, phase: str, tz: str) -> tuple[str, str]:
    action = "接单" if phase == "accept" else "联系客户"
    return (
        f"顾问超时未{action}：{who(contact, lead)}",
        f"顾问 {lead.advisor_userid} 未在 {local_time(lead.sla_deadline_at, tz)} 前{action}，请督促或改派。",
    )


def reassigned_away(lead: Lead, contact: Contact | None, *, reason: str) -> tuple[str, str]:
    return f"线索已改派：{who(contact, lead)}", f"该线索已转给其他顾问（{reason}），无需再跟进。"


def pooled(lead: Lead, contact: Contact | None, *, reason: str) -> tuple[str, str]:
    return f"线索进入公海：{who(contact, lead)}", f"原因：{reason}。请尽快指派顾问跟进。"
