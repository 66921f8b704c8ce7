"""What ``lianyi sop render`` and ``lianyi sop dry-run`` print (Chinese, China time)."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from scrm.audience import STAGE_CN, ContactFacts, GroupFacts, contact_in_audience, group_in_audience
from scrm.contact_policy import Policy
from scrm.sop.dryrun_report import MESSAGE_ACTIONS, REASON_CN, DryRunReport
from scrm.sop.dryrun_simulation import trigger_context
from scrm.sop.engine import subject_variables
from scrm.sop.exits import contact_exit_reason, group_exit_reason
from scrm.sop.render import RenderedMessage, SopRenderer, SopRenderError
from scrm.sop.spec import Step, TemplateBundle
from scrm.timing import CHINA_TZ, step_due

Loc = tuple[str | int, ...]

ACTION_CN = {
    "welcome": "欢迎语",
    "private_message": "1v1 消息",
    "advisor_task": "顾问任务",
    "group_message": "群消息",
    "add_tags": "打标签",
    "remove_tags": "去标签",
    "notify_staff": "通知员工",
    "start_sop": "启动 SOP",
    "end": "结束流程",
}
OUTCOME_CN = {"sent": "发送", "done": "完成", "skipped": "跳过"}
WEEKDAY_CN = ("一", "二", "三", "四", "五", "六", "日")
WIDE_ENOUGH = 120  # columns when the output is not a terminal (files, pipes, tests)


def local(moment: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    china = moment.astimezone(CHINA_TZ)
    return f"{china.strftime(fmt)} 周{WEEKDAY_CN[china.weekday()]}"


def duration_cn(value: timedelta) -> str:
    minutes = int(value.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days}天" if days else "", f"{hours}小时" if hours else "", f"{minutes}分钟" if minutes else ""]
    return "".join(parts) or "0分钟"


def describe_timing(step: Step) -> str:
    """``立即`` or e.g. ``加入后 2天10小时，之后的 10:00，仅周六/周日``."""
    if step.immediately or not (step.after or step.at or step.weekday):
        return "立即"
    parts = []
    if step.after:
        parts.append(f"加入后 {duration_cn(step.after)}")
    if step.at:
        parts.append(f"{'之后的 ' if step.after else ''}{step.at:%H:%M}")
    if step.weekday:
        parts.append("仅" + "/".join(f"周{WEEKDAY_CN[d - 1]}" for d in sorted(step.weekday)))
    return "，".join(parts)


# ---- render --------------------------------------------------------------------------------------------------


def _subject_lines(bundle: TemplateBundle, facts: ContactFacts | GroupFacts) -> list[str]:
    dealer = (facts.dealer or {}).get("name") or "无"
    template = bundle.template
    if isinstance(facts, ContactFacts):
        who = facts.remark or facts.name or "（无名称）"
        lines = [
            f"客户：{who}（{facts.external_userid}）· 阶段 {STAGE_CN.get(facts.stage, facts.stage)}"
            f" · 意向 {facts.intent_level or '无'} · 渠道 {facts.channel or '无'}"
            f" · 顾问 {facts.staff_name or facts.staff_userid or '无'} · 门店 {dealer}"
        ]
        in_audience, leaving = contact_in_audience(template.audience, facts), contact_exit_reason(template.exit, facts)
    else:
        lines = [
            f"客户群：{facts.name or '（无群名）'}（{facts.chat_id}）· 群主 {facts.owner_name or facts.owner or '无'}"
            f" · {facts.member_count} 人 · 门店 {dealer}"
        ]
        in_audience, leaving = group_in_audience(template.audience, facts), group_exit_reason(template.exit, facts)
    if not in_audience:
        lines.append("注意：该对象当前不在模板的受众范围内，实际不会进入这个 SOP")
    if leaving:
        lines.append(f"注意：该对象当前满足退出条件（{leaving}），实际不会收到这些步骤")
    return lines


def _attachment_line(index: int, attachment: dict[str, Any]) -> str:
    kind = attachment.get("msgtype")
    body = attachment.get(str(kind)) or {}
    if kind == "link":
        return f"{index}. 链接「{body.get('title', '')}」{body.get('url', '')}"
    if kind == "image":
        return f"{index}. 图片 {body.get('pic_url') or body.get('media_id', '')}"
    return f"{index}. 小程序「{body.get('title', '')}」{body.get('appid', '')} {body.get('page', '')}"


def _message_lines(rendered: RenderedMessage) -> list[str]:
    lines = [f"  卡片标题：{rendered.title}"] if rendered.title else []
    lines.append(f"  正文（{rendered.file or '模板内文字'}）：")
    lines.extend(f"    {line}" for line in (rendered.text or "（无正文）").splitlines())
    if rendered.attachments:
        lines.append("  附件：")
        lines.extend(f"    {_attachment_line(i, a)}" for i, a in enumerate(rendered.attachments, start=1))
    return lines


def _step_body(
    renderer: SopRenderer, step: Step, index: int, variables: dict[str, Any], channel: str
) -> tuple[list[str], list[tuple[Loc, SopRenderError]]]:
    if step.message is not None:
        try:
            return _message_lines(renderer.render(step.message, variables, channel=channel)), []
        except SopRenderError as exc:
            return ["  渲染失败，见下方错误"], [(("steps", index, step.action), exc)]
    if step.notify_staff is not None:
        try:
            text = renderer.render_text(step.notify_staff.text, variables)
        except SopRenderError as exc:
            return ["  渲染失败，见下方错误"], [(("steps", index, "notify_staff", "text"), exc)]
        return [f"  通知 {'、'.join(step.notify_staff.to)}：{text}"], []
    if step.add_tags is not None or step.remove_tags is not None:
        added, removed = "、".join(step.add_tags or []) or "无", "、".join(step.remove_tags or []) or "无"
        return [f"  加标签：{added}；去标签：{removed}"], []
    if step.start_sop is not None:
        return [f"  启动 SOP：{step.start_sop}"], []
    return ["  结束这个 SOP（后面的步骤不再执行）"], []


def print_rendered_steps(
    bundle: TemplateBundle, policy: Policy, facts: ContactFacts | GroupFacts, now: datetime, *, only: str = ""
) -> list[tuple[Loc, SopRenderError]]:
    """Print every step (or ``only``) rendered for ``facts`` as if it entered at ``now``; the render errors
    with the template location of what failed."""
    template = bundle.template
    renderer = SopRenderer(bundle)
    channel = facts.channel if isinstance(facts, ContactFacts) else ""
    trigger = trigger_context(bundle, facts)
    click.echo(f"模板：{template.name}（{bundle.id}，版本 {bundle.version}）")
    for line in _subject_lines(bundle, facts):
        click.echo(line)
    click.echo(f"预计时间按“{local(now)} 加入”估算（北京时间），已顺延免打扰时段，未计入触达上限")
    errors: list[tuple[Loc, SopRenderError]] = []
    expected = now
    for index, step in enumerate(template.steps):
        due = step_due(now, after=step.after, at=step.at, weekdays=step.weekday)
        expected = max(expected, policy.next_allowed(due) if policy.quiet_for(step.kind) else due)
        step_id = template.step_id(index)
        if only and step_id != only:
            continue
        variables = subject_variables(facts, trigger, expected)
        click.echo("")
        heading = f"[{index + 1}/{len(template.steps)}] {step_id} · {ACTION_CN[step.action]}"
        click.echo(f"{heading} · {describe_timing(step)} · 预计 {local(expected)}")
        if step.when:
            try:
                holds = renderer.evaluate(step.when, variables)
                click.echo(f"  条件 {step.when}：{'满足' if holds else '不满足（这一步会被跳过）'}")
            except SopRenderError as exc:
                click.echo(f"  条件 {step.when}：出错")
                errors.append((("steps", index, "when"), exc))
        lines, found = _step_body(renderer, step, index, variables, channel)
        for line in lines:
            click.echo(line)
        errors.extend(found)
    return errors


# ---- dry-run -------------------------------------------------------------------------------------------------


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else WIDE_ENOUGH, highlight=False, soft_wrap=False)


def _result(outcome: str, reason: str, deferred: tuple[str, ...]) -> str:
    text = OUTCOME_CN.get(outcome, outcome)
    if outcome == "skipped":
        text += f"（{REASON_CN.get(reason, reason)}）"
    if deferred:
        text += "，顺延：" + "→".join(REASON_CN.get(r, r) for r in deferred)
    return text


def _step_summary(report: DryRunReport, order: list[str]) -> Table:
    table = Table(title="各步骤汇总")
    for column in ("步骤", "动作", "发送/完成", "跳过", "顺延", "最早", "最晚"):
        table.add_column(column)
    for step_id in order:
        planned = [s for s in report.steps if s.step_id == step_id]
        if not planned:
            table.add_row(step_id, "", "0", "", "", "窗口内不执行", "")
            continue
        skipped = Counter(REASON_CN.get(s.reason, s.reason) for s in planned if s.outcome == "skipped")
        done = sum(1 for s in planned if s.outcome != "skipped")
        deferrals = sum(1 for s in planned if s.deferred)
        times = sorted(s.at for s in planned)
        table.add_row(
            step_id,
            ACTION_CN.get(planned[0].action, planned[0].action),
            str(done),
            "、".join(f"{reason} {n}" for reason, n in skipped.items()) or "0",
            str(deferrals),
            local(times[0], "%m-%d %H:%M"),
            local(times[-1], "%m-%d %H:%M"),
        )
    return table


def _more(console: Console, total: int, rows: int) -> None:
    if total > rows:
        console.print(f"……另有 {total - rows} 行，用 --rows 或 --json 查看全部")


def _entries_table(report: DryRunReport, rows: int) -> Table:
    entries = Table(title=f"会进入的对象（{len(report.entries)}）")
    for column in ("类型", "ID", "名称", "进入时间"):
        entries.add_column(column)
    for entry in report.entries[:rows]:
        kind = "客户" if entry.subject_type == "contact" else "客户群"
        entries.add_row(kind, entry.subject_id, entry.name, local(entry.enrolled_at, "%m-%d %H:%M"))
    return entries


def _detail_table(report: DryRunReport, rows: int) -> Table:
    detail = Table(title="每个对象的步骤时间")
    for column in ("对象", "步骤", "动作", "到期", "执行", "结果"):
        detail.add_column(column)
    for planned in report.steps[:rows]:
        detail.add_row(
            planned.subject_id,
            planned.step_id,
            ACTION_CN.get(planned.action, planned.action),
            local(planned.due_at, "%m-%d %H:%M"),
            local(planned.at, "%m-%d %H:%M"),
            _result(planned.outcome, planned.reason, planned.deferred),
        )
    return detail


def _per_day_table(report: DryRunReport) -> Table:
    per_day = Table(title="每日消息条数")
    for column in ("日期", *(ACTION_CN[a] for a in MESSAGE_ACTIONS), "合计"):
        per_day.add_column(column)
    for day, counts in sorted(report.per_day().items()):
        label = f"{day:%m-%d} 周{WEEKDAY_CN[day.weekday()]}"
        per_day.add_row(label, *(str(counts[a]) for a in MESSAGE_ACTIONS), str(sum(counts.values())))
    return per_day


def _print_conflicts(console: Console, report: DryRunReport, policy: Policy, rows: int) -> None:
    if report.conflicts:
        conflicts = Table(title=f"触达策略冲突（{len(report.conflicts)}）")
        for column in ("对象", "日期", "限制", "已用/上限", "步骤"):
            conflicts.add_column(column)
        for conflict in report.conflicts[:rows]:
            used = f"{conflict.used}/{conflict.limit}" + ("天" if conflict.reason == "defer_expired" else "")
            reason = REASON_CN.get(conflict.reason, conflict.reason)
            conflicts.add_row(conflict.subject_id, f"{conflict.day:%m-%d}", reason, used, conflict.step_id)
        console.print(conflicts)
        _more(console, len(report.conflicts), rows)
    else:
        caps, quota = policy.caps, policy.group_send_quota.mode
        console.print(f"没有触达策略冲突（每日 {caps.per_day} / 每周 {caps.per_week} 条上限，群发额度 {quota}）")


def print_dry_run(report: DryRunReport, policy: Policy, *, rows: int, window: timedelta) -> None:
    console = _console()
    console.print(f"SOP 试运行：{report.name}（{report.template_id}，版本 {report.version}）—— 不会发送，也不写数据库")
    console.print(f"时间窗口：{local(report.start)} → {local(report.end)}（{window.days} 天，北京时间）")
    console.print(f"进入方式（{report.trigger}）：{report.reading}")
    if not report.enabled:
        console.print("注意：模板已停用（enabled: false），以下是假设启用时的结果")
    for reason, count in sorted(report.excluded.items()):
        console.print(f"当前满足退出条件、不会进入：{reason} × {count}")
    console.print(_entries_table(report, rows))
    _more(console, len(report.entries), rows)
    console.print(_step_summary(report, report.step_ids))
    console.print(_detail_table(report, rows))
    _more(console, len(report.steps), rows)
    console.print(_per_day_table(report))
    _print_conflicts(console, report, policy, rows)
    sent = sum(1 for s in report.steps if s.outcome == "sent")
    skipped = sum(1 for s in report.steps if s.outcome == "skipped")
    deferred = sum(1 for s in report.steps if s.deferred)
    console.print(
        f"合计：{len(report.entries)} 个对象进入，发送 {sent} 条，顺延 {deferred} 步，跳过 {skipped} 步，"
        f"冲突 {len(report.conflicts)} 项，窗口之后还有 {report.later} 步"
    )
