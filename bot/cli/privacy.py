"""``lianyi privacy export|erase EXTERNAL_USERID --as USERNAME``: a customer's personal data under PIPL.

Both commands act as an existing, active user holding the ``privacy`` permission (an admin), and both are
audited under the customer's salted hash, never their id. ``export`` writes the JSON document of
:mod:`scrm.privacy.export` to stdout or ``-o FILE``; ``erase`` runs :mod:`scrm.privacy.erase` in one transaction
and says in Chinese what it did (a second run changes nothing and says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bot.cli.database import ToolFailure, run_with_corp
from bot.cli.identity import as_option
from bot.settings import load_query_settings
from scrm.accounts.actors import ActorRefused, require_actor
from scrm.accounts.permissions import Permission
from scrm.db import SessionFactory, write_transaction
from scrm.db_types import utcnow
from scrm.privacy.erase import Erasure, erase_customer
from scrm.privacy.export import export_customer

TABLE_NAMES_ZH = {
    "contacts": "客户",
    "follow_relations": "跟进关系",
    "contact_tags": "客户标签",
    "group_members": "群成员",
    "messages": "消息",
    "intent_signals": "意向信号",
    "lead_score_changes": "评分记录",
    "leads": "线索",
    "lead_events": "线索记录",
    "staff_notifications": "员工通知",
    "customer_transfers": "客户转接",
    "sop_enrolments": "SOP 进程",
    "sop_step_runs": "SOP 步骤",
    "contact_touches": "触达记录",
    "campaign_targets": "群发对象",
    "outbox_commands": "待发/已发指令",
    "inbox_events": "回调事件",
    "dead_letters": "死信",
    "audit_log": "审计记录",
}


def _check_id(external_userid: str) -> str:
    value = external_userid.strip()
    if not value or len(value) > 128 or any(c.isspace() for c in value):
        raise click.BadParameter("客户 external_userid 不能为空、含空白或超过 128 个字符", param_hint="EXTERNAL_USERID")
    return value


async def _actor(sessions: SessionFactory, username: str) -> None:
    async with sessions() as session:
        try:
            await require_actor(session, username, Permission.PRIVACY)
        except ActorRefused as exc:
            raise ToolFailure(exc.message_zh) from None


@click.group("privacy")
def privacy() -> None:
    """Customers' personal data (个人信息): export and erase under PIPL."""


@privacy.command("export")
@click.argument("external_userid")
@as_option("an admin (操作人)")
@click.option("-o", "output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE, not stdout.")
def export_command(external_userid: str, actor: str, output: Path | None) -> None:
    """Write everything held about one customer as JSON (导出客户个人信息)."""
    external_userid = _check_id(external_userid)
    settings = load_query_settings()

    async def work(sessions: SessionFactory, corp_id: str) -> dict[str, Any]:
        await _actor(sessions, actor)
        async with write_transaction(sessions) as session:
            return await export_customer(session, corp_id, external_userid, actor=actor, now=utcnow())

    document = run_with_corp(settings.database_url, settings.corp_id, work)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    rows = sum(len(r) for r in document["tables"].values())
    click.echo(f"已导出客户 {external_userid} 的 {rows} 条记录到 {output}", err=True)


def _erase_summary(external_userid: str, erasure: Erasure) -> str:
    if erasure.previously_erased_at is not None:
        when = erasure.previously_erased_at.strftime("%Y-%m-%d %H:%M UTC")
        return f"客户 {external_userid} 的个人信息已于 {when} 删除，本次没有需要处理的数据"
    if not erasure.counts:
        return f"没有找到客户 {external_userid} 的数据；已登记删除，此前的事件不会再写入"
    parts = "、".join(f"{TABLE_NAMES_ZH.get(t, t)} {n} 条" for t, n in erasure.counts.items())
    return f"已删除客户 {external_userid} 的个人信息（{parts}），统计数量保留"


@privacy.command("erase")
@click.argument("external_userid")
@as_option("an admin (操作人)")
def erase_command(external_userid: str, actor: str) -> None:
    """Erase or anonymise one customer's personal data everywhere (删除客户个人信息)."""
    external_userid = _check_id(external_userid)
    settings = load_query_settings()

    async def work(sessions: SessionFactory, corp_id: str) -> Erasure:
        await _actor(sessions, actor)
        async with write_transaction(sessions) as session:
            return await erase_customer(session, corp_id, external_userid, actor=actor, now=utcnow())

    erasure = run_with_corp(settings.database_url, settings.corp_id, work)
    click.echo(_erase_summary(external_userid, erasure))
