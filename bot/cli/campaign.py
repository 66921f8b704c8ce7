"""``lianyi campaign …``: check, save, approve, reject, plan (dry run), send, cancel, list and report campaigns.

Operators' messages are Chinese. ``send`` plans the campaign's due run now (the scheduler leader would do the
same at its next tick) and follows it with a progress bar while ``lianyi serve``'s dispatcher creates the
WeCom tasks; ``plan`` shows what a run would do without writing anything.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.cli.database import ToolFailure, require_database, run_with_corp
from bot.cli.identity import as_option
from bot.cli.text_table import table
from bot.runtime.campaign_wiring import campaign_policy
from bot.settings import QuerySettings, Settings, load_query_settings, load_settings
from bot.web.links import link_signer
from scrm.accounts.actors import ActorRefused
from scrm.campaigns import service
from scrm.campaigns.check import check_campaign_file
from scrm.campaigns.preview import preview_lines, preview_run
from scrm.campaigns.report import REASON_CN, campaign_report, render_report, target_rows, write_csv
from scrm.campaigns.spec import slot_of
from scrm.db import SessionFactory, make_engine, make_session_factory, write_transaction
from scrm.db_types import utcnow
from scrm.models import BatchStatus, Campaign, CampaignBatch, CampaignRun

T = TypeVar("T")
FOLLOW_POLL_SECONDS = 0.5


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def _with_sessions(settings: Settings, work: Callable[[SessionFactory], Awaitable[T]]) -> T:
    require_database(settings.database_url)

    async def run() -> T:
        engine = make_engine(settings.database_url)
        try:
            return await work(make_session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (service.CampaignError, ActorRefused) as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from exc


def _read(settings: QuerySettings, work: Callable[[SessionFactory, str], Awaitable[T]]) -> T:
    """``work(sessions, corp_id)`` for a command that reads (no WeCom settings; the corp may be implied)."""

    async def guarded(sessions: SessionFactory, corp_id: str) -> T:
        try:
            return await work(sessions, corp_id)
        except service.CampaignError as exc:
            raise ToolFailure(str(exc)) from exc

    return run_with_corp(settings.database_url, settings.corp_id, guarded)


@click.group("campaign")
def campaign() -> None:
    """Group pushes (群发活动): 1vN to customer groups, or 1v1 to customers."""


@campaign.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check_command(files: tuple[Path, ...]) -> None:
    """Validate campaign files and render their content against sample data (exit 1 on any problem)."""
    bad = 0
    for file in files:
        _spec, problems = check_campaign_file(file)
        for problem in problems:
            click.echo(f"{file}:{problem.line}:{problem.col} {problem.message}")
        bad += bool(problems)
    if bad:
        sys.exit(1)
    click.echo(f"{len(files)} 个群发活动文件检查通过")


@campaign.command("save")
@click.argument("file", type=click.Path(path_type=Path))
@as_option("an operator or admin (创建人)")
def save_command(file: Path, actor: str) -> None:
    """Create or update the campaign of FILE (a changed file needs approval again)."""
    spec, problems = check_campaign_file(file)
    if spec is None or problems:
        field = "content: " if spec is not None else ""  # a readable spec: what is left is its content
        _fail("\n".join(f"{file}:{p.line}:{p.col} {field}{p.message}" for p in problems))
        return
    settings = load_settings()

    async def work(sessions: SessionFactory) -> service.Saved:
        async with write_transaction(sessions) as session:
            return await service.save_campaign(session, settings.corp_id, spec, by=actor, now=utcnow())

    saved = _with_sessions(settings, work)
    words = {"created": "已创建", "updated": "已更新", "unchanged": "没有变化"}[saved.outcome]
    status = service.STATUS_CN.get(saved.campaign.status, saved.campaign.status)
    click.echo(f"群发活动 {spec.code} {words}，状态：{status}")


def _decide(action: str) -> Callable[..., None]:
    def command(code: str, by: str, reason: str = "") -> None:
        settings = load_settings()

        async def work(sessions: SessionFactory) -> str:
            async with write_transaction(sessions) as session:
                now = utcnow()
                if action == "approve":
                    await service.approve(session, settings.corp_id, code, by=by, now=now)
                    return f"群发活动 {code} 已审批通过"
                if action == "reject":
                    await service.reject(session, settings.corp_id, code, by=by, reason=reason, now=now)
                    return f"群发活动 {code} 已驳回"
                withdrawn = await service.cancel(session, settings.corp_id, code, by=by, now=now)
                return (
                    f"群发活动 {code} 已取消（{withdrawn} 个尚未创建的群发任务已撤回，已创建的任务将在企业微信中取消）"
                )

        click.echo(_with_sessions(settings, work))

    return command


@campaign.command("approve")
@click.argument("code")
@as_option("an operator or manager who did not save it (审批人)")
def approve_command(code: str, actor: str) -> None:
    """Approve a campaign waiting for approval (审批通过)."""
    _decide("approve")(code, actor)


@campaign.command("reject")
@click.argument("code")
@as_option("an operator or manager who did not save it (审批人)")
@click.option("--reason", required=True, help="Why (驳回原因).")
def reject_command(code: str, actor: str, reason: str) -> None:
    """Reject a campaign waiting for approval (驳回)."""
    _decide("reject")(code, actor, reason)


@campaign.command("cancel")
@click.argument("code")
@as_option("an operator or admin")
def cancel_command(code: str, actor: str) -> None:
    """Cancel a campaign: no further runs, unconfirmed WeCom tasks are cancelled (取消)."""
    _decide("cancel")(code, actor)


@campaign.command("list")
def list_command() -> None:
    """Every campaign with its status and next run (活动列表)."""
    settings = load_query_settings()

    async def work(sessions: SessionFactory, corp_id: str) -> list[Campaign]:
        async with sessions() as session:
            query = select(Campaign).where(Campaign.corp_id == corp_id).order_by(col(Campaign.code))
            return list((await session.exec(query)).all())

    rows = [
        (
            c.code,
            c.name,
            "客户群" if c.chat_type == "group" else "1v1",
            service.STATUS_CN.get(c.status, c.status),
            slot_of(c.next_run_at, "at") if c.next_run_at else "-",
        )
        for c in _read(settings, work)
    ]
    click.echo(table(["编码", "名称", "类型", "状态", "下次发送"], rows) if rows else "还没有群发活动")


@campaign.command("plan")
@click.argument("code")
def plan_command(code: str) -> None:
    """What a run would send now: targets, skips by reason, batches and calls (read-only, 预览)."""
    settings = load_query_settings()

    async def work(sessions: SessionFactory, corp_id: str) -> str:
        async with sessions() as session:
            found = await service.get_campaign(session, corp_id, code)
            now, policy, rate = utcnow(), campaign_policy(settings), settings.campaign_calls_per_minute
            preview = await preview_run(
                session,
                found,
                service.spec_of(found),
                now=now,
                policy=policy,
                calls_per_minute=rate,
                links=link_signer(settings),
            )
            await session.rollback()
        lines = preview_lines(preview, code, policy, now, rate)
        reasons = [(REASON_CN.get(k, k), v) for k, v in preview.plan.skip_reasons.most_common()]
        if reasons:
            lines.append(table(["跳过原因", "数量"], reasons))
        return "\n".join(lines)

    click.echo(_read(settings, work))


async def _progress(session: AsyncSession, run_id: int) -> tuple[int, int, int]:
    """(batches, batches no longer queued, tasks confirmed) of a run."""
    total = (await session.exec(select(func.count()).where(CampaignBatch.run_id == run_id))).one()
    queued = (
        await session.exec(
            select(func.count()).where(CampaignBatch.run_id == run_id, CampaignBatch.status == BatchStatus.QUEUED.value)
        )
    ).one()
    confirmed = (
        await session.exec(
            select(func.count()).where(CampaignBatch.run_id == run_id, col(CampaignBatch.confirmed_at).is_not(None))
        )
    ).one()
    return int(total), int(total) - int(queued), int(confirmed)


@campaign.command("send")
@click.argument("code")
@click.option("--follow/--no-follow", default=True, help="Show a progress bar until every task is created.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow at most.")
def send_command(code: str, follow: bool, timeout: float) -> None:
    """Plan the campaign's due run now and follow it (立即发送; `lianyi serve` creates the tasks)."""
    settings = load_settings()

    async def work(sessions: SessionFactory) -> CampaignRun | None:
        runs = await service.run_due(
            sessions,
            settings.corp_id,
            utcnow(),
            campaign_policy(settings),
            calls_per_minute=settings.campaign_calls_per_minute,
            links=link_signer(settings),
            only=code,
        )
        if runs:
            return runs[0]
        async with sessions() as session:
            found = await service.get_campaign(session, settings.corp_id, code)
        status = service.STATUS_CN.get(found.status, found.status)
        when = slot_of(found.next_run_at, "at") if found.next_run_at else "无"
        raise service.CampaignError(f"群发活动 {code} 现在没有需要发送的批次（状态：{status}，下次发送：{when}）")

    run = _with_sessions(settings, work)
    if run is None or run.id is None:
        return
    run_id = run.id

    async def follow_run(sessions: SessionFactory) -> None:
        async with sessions() as session:
            planned = await session.get(CampaignRun, run_id)
        assert planned is not None
        click.echo(f"已规划：目标 {planned.targets}，跳过 {planned.skipped}，群发任务 {planned.batches}")
        if not follow or not planned.batches:
            return
        columns = (TextColumn("创建群发任务"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
        with Progress(*columns, TimeElapsedColumn()) as bar:
            task = bar.add_task("tasks", total=planned.batches, note="")
            loop = asyncio.get_running_loop()
            give_up = loop.time() + timeout
            while loop.time() < give_up:
                async with sessions() as session:
                    total, done, confirmed = await _progress(session, run_id)
                bar.update(task, completed=done, total=total, note=f"群主已确认 {confirmed}")
                if done >= total:
                    return
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
        click.echo("仍有群发任务在排队；lianyi serve 是否在运行？可用 lianyi campaign report 查看进度", err=True)

    _with_sessions(settings, follow_run)


@campaign.command("report")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None, help="Also write one row per target.")
def report_command(code: str, as_json: bool, csv_path: Path | None) -> None:
    """Targets, tasks, confirmed %, delivered %, quota skips and link clicks per run (活动报表)."""
    settings = load_query_settings()

    async def work(sessions: SessionFactory, corp_id: str) -> str:
        async with sessions() as session:
            report = await campaign_report(session, corp_id, code)
            if csv_path is not None:
                rows = await target_rows(session, corp_id, code)
                with csv_path.open("w", encoding="utf-8", newline="") as out:
                    write_csv(rows, out)
        if as_json:
            return json.dumps(report.as_json(), ensure_ascii=False, indent=2)
        return render_report(report)

    click.echo(_read(settings, work))
    if csv_path is not None:
        click.echo(f"明细已写入 {csv_path}", err=True)
