"""``lianyi sop render`` and ``lianyi sop dry-run``: one template against the real data, nothing sent or written.

Both read the SOP folder (``LIANYI_SOP_DIR``) and the database (``LIANYI_DATABASE_URL``) of one corp
(``LIANYI_CORP_ID``; may be left out when the database holds a single corp). The database is opened in a
read-only transaction (PostgreSQL ``SET TRANSACTION READ ONLY``, SQLite ``PRAGMA query_only``) that is
rolled back at the end.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy import text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.cli.database import ToolFailure, check_database, fail, resolve_corp
from bot.cli.sop import default_sop_dir, problem_line, shown_path, sop
from bot.cli.sop_views import print_dry_run, print_rendered_steps
from bot.settings import load_query_settings
from scrm.audience import ContactFacts, GroupFacts, load_contact, load_group
from scrm.db import make_engine, make_session_factory
from scrm.folder_check import RULE_FILES
from scrm.models import Contact
from scrm.problems import RENDER_ERROR_CODES
from scrm.sop.check import check_loaded
from scrm.sop.dryrun import dry_run
from scrm.sop.render import SopRenderError
from scrm.sop.source import FolderLoad, TemplateSource, load_folder
from scrm.sop.spec import TemplateBundle
from scrm.timing import CHINA_TZ

T = TypeVar("T")


# ---- shared: the template, the database --------------------------------------------------------------------


def _find_source(load: FolderLoad, template: str, path: Path | None) -> TemplateSource:
    sources = list(load.sources.values())
    if path is not None:
        found = [s for s in sources if s.path.resolve() == path.resolve()]
    else:  # by id; a file too broken to have one is found by its name
        found = [s for s in sources if isinstance(s.raw, dict) and s.raw.get("id") == template]
        found = found or [s for s in sources if s.path.stem == template]
    if found:
        return found[0]
    ids = sorted(str(s.raw.get("id")) for s in load.sources.values() if isinstance(s.raw, dict) and s.raw.get("id"))
    close = difflib.get_close_matches(template, ids, n=1)
    hint = f"，是不是 {close[0]}？" if close else f"。可用的模板：{'、'.join(ids) or '无'}"
    raise ToolFailure(f"找不到模板 {template}{hint}")


def load_bundle(template: str) -> tuple[FolderLoad, TemplateSource, TemplateBundle]:
    """The template named by id (in ``LIANYI_SOP_DIR``) or by the path of its YAML file (its folder is loaded)."""
    candidate = Path(template)
    path = candidate if candidate.suffix in (".yaml", ".yml") or candidate.is_file() else None
    if path is not None and not path.is_file():
        raise ToolFailure(f"模板文件不存在：{template}")
    folder = path.parent if path is not None else default_sop_dir()
    if not folder.is_dir():
        raise ToolFailure(f"SOP 目录不存在：{folder}")
    load = load_folder(folder)
    source = _find_source(load, template, path)
    problems = check_loaded(load, folder, rule_files=RULE_FILES)
    if problems or source.bundle is None:  # what `sop check` reports: the service would refuse this folder too
        verdict = (
            "模板有问题，无法使用；请先修正（lianyi sop check）"
            if source.bundle is None
            else f"SOP 目录未通过检查（{len(problems)} 个问题），线上不会使用这些模板；请先修正（lianyi sop check）"
        )
        raise ToolFailure("\n".join([*(problem_line(p) for p in problems), verdict]))
    return load, source, source.bundle


async def _read_only(work: Callable[[AsyncSession, str], Awaitable[T]]) -> T:
    """Run ``work(session, corp_id)`` in a read-only transaction that is rolled back."""
    settings = load_query_settings()
    await check_database(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        async with make_session_factory(engine)() as session:
            conn = await session.connection()
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SET TRANSACTION READ ONLY"))
            else:
                await conn.execute(text("PRAGMA query_only = ON"))
            try:
                return await work(session, await resolve_corp(session, settings.corp_id))
            finally:
                await session.rollback()
    finally:
        await engine.dispose()


def _run(work: Callable[[AsyncSession, str], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_read_only(work))
    except ToolFailure as exc:
        fail(str(exc))


def parse_moment(value: str) -> datetime:
    """ISO date or date-time; without an offset it is China time."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"时间格式无效：{value}，应为 2026-03-02 或 2026-03-02T10:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA_TZ)
    return moment.astimezone(UTC)


async def contact_facts(session: AsyncSession, corp_id: str, given: str) -> ContactFacts | None:
    """The contact ``given`` by external_userid or, when that finds none, by its numeric row id (README)."""
    found = await load_contact(session, corp_id, given)
    if found is None and given.isdigit():
        statement = select(Contact.external_userid).where(Contact.corp_id == corp_id, Contact.id == int(given))
        external_userid = (await session.exec(statement)).first()
        if external_userid is not None:
            found = await load_contact(session, corp_id, external_userid)
    return found


def render_error_line(
    error: SopRenderError, source: TemplateSource, folder: Path, prefix: tuple[str | int, ...]
) -> str:
    """``file:line code message`` of a render error: the message file's line, or the template YAML's line."""
    code = RENDER_ERROR_CODES.get(error.code, "SOP011")
    if error.file is not None:
        return f"{shown_path(str(folder / error.file))}:{error.line or 1} {code} {error.message_cn}"
    mark = source.source.text_line((*prefix, *error.loc), error.line or 1)
    return f"{shown_path(str(source.path))}:{mark.line} {code} {error.message_cn}"


# ---- render --------------------------------------------------------------------------------------------------


@sop.command("render")
@click.argument("template")
@click.option("--contact", "external_userid", default="", help="客户 external_userid 或数据库编号（客户类 SOP）")
@click.option("--group", "chat_id", default="", help="客户群 chat_id（群类 SOP）")
@click.option("--step", "step_id", default="", help="只渲染这一步（步骤 id 或 s1、s2…）")
@click.option("--at", "at_text", default="", help="渲染时的“现在”（ISO，默认当前时间，北京时间）")
def render_command(template: str, external_userid: str, chat_id: str, step_id: str, at_text: str) -> None:
    """Render a template's messages with a real contact or group (用真实客户数据渲染模板)."""
    now = parse_moment(at_text) if at_text else datetime.now(UTC)
    try:
        load, source, bundle = load_bundle(template)
    except ToolFailure as exc:
        fail(str(exc))
    kind = bundle.template.kind
    if kind == "contact" and not external_userid:
        fail(f"模板 {bundle.id} 是客户类 SOP，请用 --contact 指定客户 external_userid")
    if kind == "group" and not chat_id:
        fail(f"模板 {bundle.id} 是群类 SOP，请用 --group 指定客户群 chat_id")
    ids = [bundle.template.step_id(i) for i in range(len(bundle.template.steps))]
    if step_id and step_id not in ids:
        fail(f"模板 {bundle.id} 没有步骤 {step_id}；步骤：{'、'.join(ids)}")

    async def facts_of(session: AsyncSession, corp_id: str) -> ContactFacts | GroupFacts:
        found: ContactFacts | GroupFacts | None
        if kind == "group":
            found = await load_group(session, corp_id, chat_id)
            if found is None:
                raise ToolFailure(f"找不到客户群 {chat_id}（企业 {corp_id}）；请确认 chat_id，或先运行 lianyi sync")
            return found
        found = await contact_facts(session, corp_id, external_userid)
        if found is None:
            raise ToolFailure(
                f"找不到客户 {external_userid}（企业 {corp_id}）；--contact 需要客户的 external_userid"
                "（或客户在数据库中的编号），请确认，或先运行 lianyi sync"
            )
        return found

    facts = _run(facts_of)
    errors = print_rendered_steps(bundle, load.policy, facts, now, only=step_id)
    for prefix, error in errors:
        click.echo(render_error_line(error, source, Path(source.path).parent, prefix))
    if errors:
        click.echo(f"渲染失败：{len(errors)} 处")
        sys.exit(1)


# ---- dry-run -------------------------------------------------------------------------------------------------


@sop.command("dry-run")
@click.argument("template")
@click.option("--days", default=14, show_default=True, type=click.IntRange(1, 366), help="模拟多少天")
@click.option("--from", "start_text", default="", help="从何时开始（ISO，默认现在，北京时间）")
@click.option("--json", "as_json", is_flag=True, help="输出 JSON 报告")
@click.option("--rows", default=30, show_default=True, type=click.IntRange(0), help="明细表最多显示几行")
def dry_run_command(template: str, days: int, start_text: str, as_json: bool, rows: int) -> None:
    """Simulate a template on the real data without writing (试运行：谁会进入、何时发送、每日条数、策略冲突).

    \b
    谁会进入：
      事件触发：当前符合受众和触发条件的对象，视为在开始时刻同时触发
      定时触发（cron / dates）：窗口内每次触发 × 符合受众的对象
      沉默唤醒：已沉默满 days 天的客户立即进入，窗口内将满的在那一刻进入
    上限和群发额度按数据库里已有的触达记录加上本模板的发送计算。
    """
    start = parse_moment(start_text) if start_text else datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        load, _source, bundle = load_bundle(template)
    except ToolFailure as exc:
        fail(str(exc))

    report = _run(
        lambda session, corp_id: dry_run(session, bundle, load.policy, corp_id=corp_id, start=start, days=days)
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    print_dry_run(report, load.policy, rows=rows, window=timedelta(days=days))
