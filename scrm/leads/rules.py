"""The schema of ``handoff.yaml`` (who becomes a lead, how it is routed, the SLA and its escalation ladder,
notification limits, per-dealer overrides) and :func:`load_handoff_rules`.

The file lives in the SOP folder next to ``intent.yaml``; ``lianyi sop check`` validates it (code SOP028).
Every section is optional: without the file, the defaults below apply (level H, a test-drive booking or a
form hands off; accept within 5 minutes and contact within 30, counted in opening hours; remind → manager →
reassign; at most 2 reassignments, then the pool).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from scrm.audience import LEVELS
from scrm.config_file import ConfigFileError, RuleFile, load_config

__all__ = [
    "HANDOFF_FILE",
    "LOST_REASONS",
    "HandoffRules",
    "HandoffRulesError",
    "LadderAction",
    "LadderRung",
    "SlaRules",
    "load_handoff_rules",
    "rules_in",
]

HANDOFF_FILE = "handoff.yaml"

# 战败原因 (fixed so that reports compare across dealers); the advisor adds free text
LOST_REASONS: dict[str, str] = {
    "bought_elsewhere": "已在其他门店购车",
    "competitor": "选择了竞品品牌",
    "budget": "预算不足",
    "no_plan": "暂无购车计划",
    "price": "价格未谈拢",
    "unreachable": "多次联系不上",
    "fake": "无效线索（空号、同行、误加）",
    "other": "其他原因",
}

HANDOFF_BEHAVIOURS = ("test_drive_booking", "form")
DEFAULT_TRANSFER_MESSAGE = "您好，接下来由门店的专属销售顾问为您服务，有任何问题都可以随时问我。"

Minutes = Annotated[int, Field(ge=0, le=7 * 24 * 60)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HandoffTrigger(_Frozen):
    """Which contacts become leads: reaching one of ``levels``, or one of ``behaviours`` (预约试驾, 留资)."""

    levels: list[str] = Field(default_factory=lambda: ["H"])
    behaviours: list[str] = Field(default_factory=lambda: list(HANDOFF_BEHAVIOURS))

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[str]) -> list[str]:
        for level in value:
            if level not in LEVELS:
                message = f"意向等级 {level} 无效，可选：{'、'.join(LEVELS)}"
                raise PydanticCustomError("bad_level", message, {"key": level})
        return value

    @field_validator("behaviours")
    @classmethod
    def _behaviours(cls, value: list[str]) -> list[str]:
        for behaviour in value:
            if behaviour not in HANDOFF_BEHAVIOURS:
                message = f"行为 {behaviour} 无效，可选：{'、'.join(HANDOFF_BEHAVIOURS)}"
                raise PydanticCustomError("bad_behaviour", message, {"key": behaviour})
        return value


class Routing(_Frozen):
    """``outside_hours``: wait = the lead waits for the dealer's opening time; assign = assign at once.
    ``reach``: how an advisor gets a customer who is not yet their contact — transfer (在职继承 from the
    account the customer added) or invite (a task card asking the advisor to invite them)."""

    outside_hours: Literal["wait", "assign"] = "wait"
    reach: Literal["transfer", "invite"] = "transfer"
    transfer_message: str = Field(default=DEFAULT_TRANSFER_MESSAGE, max_length=200)
    invite_url: str = Field(default="", max_length=512)  # the dealer group's join link shown on invite tasks
    pool_notify: list[str] = Field(default_factory=list)  # userids told about pool leads (brand operators)


class LadderAction(StrEnum):
    REMIND = "remind"  # tell the advisor again
    NOTIFY_MANAGER = "notify_manager"  # tell the dealer's managers
    REASSIGN = "reassign"  # the next advisor (at most max_reassign times), else the pool
    POOL = "pool"  # straight to the pool


class LadderRung(_Frozen):
    """``after``: minutes past the phase's deadline (0 = at the deadline)."""

    after: Minutes = 0
    action: LadderAction


def _default_accept_ladder() -> list[LadderRung]:
    return [
        LadderRung(after=0, action=LadderAction.REMIND),
        LadderRung(after=5, action=LadderAction.NOTIFY_MANAGER),
        LadderRung(after=10, action=LadderAction.REASSIGN),
    ]


def _default_contact_ladder() -> list[LadderRung]:
    return [
        LadderRung(after=0, action=LadderAction.REMIND),
        LadderRung(after=15, action=LadderAction.NOTIFY_MANAGER),
        LadderRung(after=30, action=LadderAction.REASSIGN),
    ]


def _ordered(rungs: list[LadderRung]) -> list[LadderRung]:
    afters = [r.after for r in rungs]
    if afters != sorted(afters):
        raise PydanticCustomError("ladder_order", "升级阶梯的 after 必须从小到大排列")
    return rungs


class SlaRules(_Frozen):
    accept_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 5
    contact_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 30
    business_hours: bool = True  # count only the dealer's opening minutes
    max_reassign: Annotated[int, Field(ge=0, le=20)] = 2
    accept_ladder: list[LadderRung] = Field(default_factory=_default_accept_ladder)
    contact_ladder: list[LadderRung] = Field(default_factory=_default_contact_ladder)

    _accept_order = field_validator("accept_ladder")(_ordered)
    _contact_order = field_validator("contact_ladder")(_ordered)

    def ladder(self, phase: str) -> list[LadderRung]:
        return self.accept_ladder if phase == "accept" else self.contact_ladder


class SlaOverride(_Frozen):
    accept_minutes: Annotated[int, Field(ge=1, le=24 * 60)] | None = None
    contact_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None
    business_hours: bool | None = None
    max_reassign: Annotated[int, Field(ge=0, le=20)] | None = None
    accept_ladder: list[LadderRung] | None = None
    contact_ladder: list[LadderRung] | None = None


class RoutingOverride(_Frozen):
    outside_hours: Literal["wait", "assign"] | None = None
    reach: Literal["transfer", "invite"] | None = None
    invite_url: str | None = None


class DealerOverride(_Frozen):
    sla: SlaOverride = Field(default_factory=SlaOverride)
    routing: RoutingOverride = Field(default_factory=RoutingOverride)


class NotifyLimits(_Frozen):
    """App messages per staff member. WeCom silently drops more than 30 a minute or 1000 an hour, so stay
    below; what does not fit waits and goes out as one digest."""

    per_minute: Annotated[int, Field(ge=1, le=30)] = 20
    per_hour: Annotated[int, Field(ge=1, le=1000)] = 600
    digest_after: Annotated[int, Field(ge=2, le=100)] = 2  # this many pending at once → one digest card


class HandoffRules(_Frozen):
    enabled: bool = True
    handoff: HandoffTrigger = Field(default_factory=HandoffTrigger)
    routing: Routing = Field(default_factory=Routing)
    sla: SlaRules = Field(default_factory=SlaRules)
    notify: NotifyLimits = Field(default_factory=NotifyLimits)
    timezone: str = "Asia/Shanghai"
    dealers: dict[str, DealerOverride] = Field(default_factory=dict)  # by dealer code

    @model_validator(mode="after")
    def _timezone(self) -> HandoffRules:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError("bad_timezone", f"时区 {self.timezone} 无效，例如 Asia/Shanghai") from None
        return self

    def sla_for(self, dealer_code: str) -> SlaRules:
        """The SLA of one dealer: the file's ``sla`` with that dealer's overrides applied."""
        override = self.dealers.get(dealer_code)
        if override is None:
            return self.sla
        changes = override.sla.model_dump(exclude_none=True)
        return self.sla.model_copy(update={k: getattr(override.sla, k) for k in changes})

    def routing_for(self, dealer_code: str) -> Routing:
        override = self.dealers.get(dealer_code)
        if override is None:
            return self.routing
        changes = override.routing.model_dump(exclude_none=True)
        return self.routing.model_copy(update=changes)


class HandoffRulesError(ConfigFileError):
    """``handoff.yaml`` cannot be used; ``problems`` say where and why."""


def load_handoff_rules(path: str | Path) -> HandoffRules:
    """Read and validate ``handoff.yaml``; raises :class:`HandoffRulesError` (every problem, with position)."""
    return load_config(path, HandoffRules, HandoffRulesError)


def rules_in(folder: str | Path) -> HandoffRules:
    """The folder's handoff.yaml, or the defaults when it has none (an invalid file raises)."""
    path = Path(folder) / HANDOFF_FILE
    return load_handoff_rules(path) if path.exists() else HandoffRules()


HANDOFF_RULE_FILE = RuleFile(HANDOFF_FILE, "SOP028", load_handoff_rules)  # checked by `lianyi sop check`
