"""Turning a scenario's script into a deterministic plan of world-action steps.

Each script phase is a pydantic model with a generator registered in :data:`PHASES`. Generators draw from
one seeded RNG and only append :class:`Step` objects; nothing touches the emulator state until the plan is
run. Every step has a lane: steps of one lane (one customer, one group, the tag console) run in order,
different lanes run concurrently, so ids that a step creates are chosen here, up front.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.emulator.base import make_id
from bot.emulator.state import EmulatorState
from scrm.channel import build_state

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰飞鹏辉斌宇浩凯晨欣怡婷雪琳子轩梓涵一诺思雨博文俊杰"
REMARKS = ("看中SUV", "预算20万左右", "周末到店", "想置换旧车", "关注新能源", "老客户介绍", "分期意向", "等优惠")
GROUP_KINDS = ("车主交流群", "新车品鉴群", "试驾活动群", "售后服务群", "团购福利群")
NOTICES = ("本群仅限车主交流,请勿发广告。", "周六试驾会,报名请联系群主。", "本月保养九折,欢迎预约。")


@dataclass(frozen=True, slots=True)
class Step:
    """One world action: ``action`` names a step function (see ``scenario.STEP_ACTIONS``)."""

    lane: str
    action: str
    kwargs: dict[str, Any]


@dataclass(slots=True)
class PlanContext:
    corp_id: str
    rng: random.Random
    advisors: list[tuple[str, str]]  # (dealer code, userid) of staff with contact permission
    initial_tags: list[str]  # tag ids that exist before the script and are never deleted by it
    steps: list[Step] = field(default_factory=list)
    customers: dict[str, list[str]] = field(default_factory=dict)  # external_userid → advisors following
    names: dict[str, str] = field(default_factory=dict)
    serials: dict[str, int] = field(default_factory=dict)

    def new_id(self, kind: str) -> str:
        self.serials[kind] = self.serials.get(kind, 0) + 1
        return make_id(self.corp_id, f"scenario_{kind}", self.serials[kind])

    def add(self, lane: str, action: str, **kwargs: Any) -> None:
        self.steps.append(Step(lane, action, kwargs))

    def person_name(self) -> str:
        given = "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2))))
        return self.rng.choice(SURNAMES) + given

    def chance(self, ratio: float) -> bool:
        return self.rng.random() < ratio


class _Phase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class AddCustomers(_Phase):
    """Customers add advisors through dealer QR codes and other channels; remarks and tags follow."""

    phase: Literal["add_customers"]
    count: int = Field(ge=0, le=100_000)
    channels: dict[str, float] = Field(default_factory=lambda: {"qr": 1.0})
    half_add_ratio: Ratio = 0.0
    second_advisor_ratio: Ratio = 0.0
    remark_ratio: Ratio = 0.0
    tag_ratio: Ratio = 0.0


class Groups(_Phase):
    """Advisors create customer groups; people join, leave; names, notices and owners change."""

    phase: Literal["groups"]
    count: int = Field(ge=0, le=10_000)
    initial_members: tuple[int, int] = (2, 5)
    joins: tuple[int, int] = (1, 5)
    outsider_ratio: Ratio = 0.2  # joiners who are not anyone's contact
    leave_ratio: Ratio = 0.2
    rename_ratio: Ratio = 0.0
    notice_ratio: Ratio = 0.0
    owner_change_ratio: Ratio = 0.0
    dismiss_ratio: Ratio = 0.0


class TagAdmin(_Phase):
    """An administrator edits corp tags in the console (each change is a change_external_tag callback)."""

    phase: Literal["tag_admin"]
    group_name: str = "活动标签"
    create: int = Field(default=3, ge=1, le=100)
    rename: int = Field(default=1, ge=0)
    delete: int = Field(default=1, ge=0)
    shuffle: int = Field(default=1, ge=0)


class Deletions(_Phase):
    """Advisors delete customers, and customers delete advisors (churn)."""

    phase: Literal["deletions"]
    staff_deletes: int = Field(default=0, ge=0)
    customer_deletes: int = Field(default=0, ge=0)


ScriptPhase = Annotated[AddCustomers | Groups | TagAdmin | Deletions, Field(discriminator="phase")]


def _pick_channel(ctx: PlanContext, channels: dict[str, float]) -> str:
    names = sorted(channels)
    return ctx.rng.choices(names, weights=[channels[n] for n in names])[0]


def _add_customers(phase: AddCustomers, ctx: PlanContext) -> None:
    for _ in range(phase.count):
        ext, name = ctx.new_id("contact"), ctx.person_name()
        lane = f"contact:{ext}"
        dealer, advisor = ctx.rng.choice(ctx.advisors)
        channel = _pick_channel(ctx, phase.channels)
        action = "half_add" if ctx.chance(phase.half_add_ratio) else "add_contact"
        state = build_state(dealer=dealer, channel=channel, advisor=advisor)
        gender = ctx.rng.choice((1, 2))
        ctx.add(lane, action, userid=advisor, external_userid=ext, name=name, state=state, gender=gender)
        ctx.customers[ext], ctx.names[ext] = [advisor], name
        if ctx.chance(phase.second_advisor_ratio):
            others = [a for a in ctx.advisors if a[0] == dealer and a[1] != advisor]
            if others:
                second = ctx.rng.choice(others)[1]
                ctx.add(lane, "add_contact", userid=second, external_userid=ext, name=name, state="")
                ctx.customers[ext].append(second)
        if ctx.chance(phase.remark_ratio):
            remark = f"{name}-{ctx.rng.choice(REMARKS)}"
            ctx.add(lane, "edit_remark", userid=advisor, external_userid=ext, remark=remark)
        if ctx.chance(phase.tag_ratio) and ctx.initial_tags:
            tags = ctx.rng.sample(ctx.initial_tags, k=min(len(ctx.initial_tags), ctx.rng.choice((1, 2))))
            ctx.add(lane, "mark_tags_in_client", userid=advisor, external_userid=ext, add=tags)


def _group_people(ctx: PlanContext, count: int, outsider_ratio: float, exclude: set[str]) -> list[str]:
    pool = [c for c in ctx.customers if c not in exclude]
    people: list[str] = []
    for _ in range(count):
        if pool and not ctx.chance(outsider_ratio):
            person = pool.pop(ctx.rng.randrange(len(pool)))
        else:
            person = ctx.new_id("contact")
            ctx.names[person] = ctx.person_name()
        people.append(person)
    return people


def _groups(phase: Groups, ctx: PlanContext) -> None:
    for number in range(1, phase.count + 1):
        chat_id = ctx.new_id("group")
        lane = f"group:{chat_id}"
        dealer, owner = ctx.rng.choice(ctx.advisors)
        members: set[str] = {owner}
        first = _group_people(ctx, ctx.rng.randint(*phase.initial_members), phase.outsider_ratio, members)
        name = f"{dealer}{ctx.rng.choice(GROUP_KINDS)}{number}"
        names = {p: ctx.names[p] for p in first}
        ctx.add(lane, "create_group", owner=owner, name=name, members=first, chat_id=chat_id, names=names)
        members.update(first)
        for _ in range(ctx.rng.randint(*phase.joins)):
            joiners = _group_people(ctx, ctx.rng.randint(1, 3), phase.outsider_ratio, members)
            scene = ctx.rng.choice((1, 3, 3))
            joined = {p: ctx.names[p] for p in joiners}
            ctx.add(lane, "join_group", chat_id=chat_id, members=joiners, join_scene=scene, names=joined)
            members.update(joiners)
            if ctx.chance(phase.leave_ratio):
                leaver = ctx.rng.choice(sorted(members - {owner}))
                ctx.add(lane, "leave_group", chat_id=chat_id, members=[leaver], quit_scene=ctx.rng.choice((0, 1)))
                members.discard(leaver)
        if ctx.chance(phase.rename_ratio):
            ctx.add(lane, "rename_group", chat_id=chat_id, name=f"{name}(新)")
        if ctx.chance(phase.notice_ratio):
            ctx.add(lane, "change_notice", chat_id=chat_id, notice=ctx.rng.choice(NOTICES))
        if ctx.chance(phase.owner_change_ratio):
            colleagues = [a[1] for a in ctx.advisors if a[0] == dealer and a[1] != owner]
            if colleagues:
                new_owner = ctx.rng.choice(colleagues)
                if new_owner not in members:
                    ctx.add(lane, "join_group", chat_id=chat_id, members=[new_owner], join_scene=1)
                    members.add(new_owner)
                ctx.add(lane, "change_owner", chat_id=chat_id, new_owner=new_owner)
        if ctx.chance(phase.dismiss_ratio):
            ctx.add(lane, "dismiss_group", chat_id=chat_id)


def _tag_admin(phase: TagAdmin, ctx: PlanContext) -> None:
    names = [f"活动{n}" for n in range(1, phase.create + 1)]
    ctx.add("tags", "create_tag_group", name=phase.group_name, tags=names[:1])
    for name in names[1:]:
        ctx.add("tags", "create_tag_named", group_name=phase.group_name, name=name)
    for name in ctx.rng.sample(names, k=min(phase.rename, len(names))):
        ctx.add("tags", "rename_tag_named", group_name=phase.group_name, name=name, new_name=f"{name}(已结束)")
        names[names.index(name)] = f"{name}(已结束)"
    for name in ctx.rng.sample(names, k=min(phase.delete, len(names) - 1)):
        ctx.add("tags", "delete_tag_named", group_name=phase.group_name, name=name)
    for _ in range(phase.shuffle):
        ctx.add("tags", "shuffle_group_named", group_name=phase.group_name)


def _deletions(phase: Deletions, ctx: PlanContext) -> None:
    relations = [(ext, userid) for ext, advisors in ctx.customers.items() for userid in advisors]
    chosen = ctx.rng.sample(relations, k=min(len(relations), phase.staff_deletes + phase.customer_deletes))
    for index, (ext, userid) in enumerate(chosen):
        action = "staff_delete_contact" if index < phase.staff_deletes else "contact_deletes_staff"
        ctx.add(f"contact:{ext}", action, userid=userid, external_userid=ext)
        ctx.customers[ext].remove(userid)


PhaseGenerator = Callable[[Any, PlanContext], None]
PHASES: dict[type[_Phase], PhaseGenerator] = {
    AddCustomers: _add_customers,
    Groups: _groups,
    TagAdmin: _tag_admin,
    Deletions: _deletions,
}


def plan_script(script: list[Any], state: EmulatorState, seed: int) -> list[Step]:
    """The steps of ``script`` for a corp set up as ``state``; the same seed gives the same plan."""
    advisors = [(s.dealer_code, s.userid) for s in state.staff.values() if s.has_contact_permission and s.dealer_code]
    ctx = PlanContext(
        corp_id=state.corp_id,
        rng=random.Random(seed),
        advisors=advisors,
        initial_tags=[t.id for t in state.all_tags()],
    )
    for phase in script:
        PHASES[type(phase)](phase, ctx)
    return ctx.steps
