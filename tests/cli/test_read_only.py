"""Commands that only read the database, run as a new user runs them: a real ``lianyi`` process with no WeCom
settings, on a migrated database, a missing one, an un-migrated one, and on SOP folders that fail ``sop check``."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from scrm.db import make_engine, make_session_factory, write_transaction
from scrm.models import Contact, Corp
from tests.conftest import (
    TEST_AES_KEY,
    TEST_CORP_ID,
    TEST_SECRET_KEY,
    TEST_TOKEN,
    _pg_admin,
    create_sqlite_database,
    pg_async_url,
)
from tests.sop.support import CORP, MONDAY_10AM, add_contact, seed

LIANYI = Path(sys.executable).with_name("lianyi")

NURTURE = """\
id: nurture
name: 新客培育
kind: contact
trigger: {event: contact.added}
steps:
  - id: hello
    immediately: true
    private_message:
      text: "{{ contact.name }}您好，我是{{ dealer.name }}的{{ staff.name }}"
  - id: tag
    after: 1d
    add_tags: [培育完成]
"""

CAMPAIGN = """\
code: spring
name: 春季试驾
chat_type: group
content:
  text: "{{ dealer.name }}春季试驾开始了"
schedule: {now: true}
"""


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def lianyi(*args: str, cwd: Path, **settings: str) -> Ran:
    """``lianyi ARGS`` in ``cwd`` with no LIANYI_* variable but ``settings`` (PYTHONPATH etc. are kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update({"LIANYI_" + k.upper(): v for k, v in settings.items()})
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def sop_folder(root: Path) -> Path:
    folder = root / "sop"
    folder.mkdir()
    (folder / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    (folder / "tags.yaml").write_text("SOP进度: [培育完成]\n", encoding="utf-8")
    return folder


async def seeded_database(path: Path) -> str:
    url = await create_sqlite_database(path)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        await seed(factory)
        await add_contact(factory, "wmWang", at=MONDAY_10AM - timedelta(days=3), name="王建国")
    finally:
        await engine.dispose()
    return url


async def add_corp(url: str, corp_id: str) -> None:
    engine = make_engine(url)
    try:
        async with write_transaction(make_session_factory(engine)) as session:
            session.add(Corp(corp_id=corp_id))
    finally:
        await engine.dispose()


async def contact_number(url: str, external_userid: str) -> int:
    engine = make_engine(url)
    try:
        async with make_session_factory(engine)() as session:
            found = (await session.exec(select(Contact.id).where(Contact.external_userid == external_userid))).one()
    finally:
        await engine.dispose()
    assert found is not None
    return found


def assert_one_line_naming_the_fix(ran: Ran) -> None:
    assert ran.code == 1, ran
    assert ran.out == ""
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert "LIANYI_DATABASE_URL" in lines[0] and "lianyi migrate" in lines[0]
    assert lines[0].startswith("数据库不存在或尚未迁移")
    assert "database missing or not migrated" in lines[0]


# ---- no WeCom settings needed --------------------------------------------------------------------------------


async def test_read_only_commands_run_without_wecom_settings(tmp_path: Path) -> None:
    url = await seeded_database(tmp_path / "lianyi.db")
    folder = sop_folder(tmp_path)
    (tmp_path / "spring.yaml").write_text(CAMPAIGN, encoding="utf-8")
    env = {"database_url": url, "sop_dir": str(folder)}

    listed = await lianyi("campaign", "list", cwd=tmp_path, **env)
    assert (listed.code, listed.out, listed.err) == (0, "还没有群发活动\n", "")
    checked = await lianyi("campaign", "check", "spring.yaml", cwd=tmp_path, **env)
    assert (checked.code, checked.out) == (0, "1 个群发活动文件检查通过\n"), checked
    for command in (("campaign", "plan", "spring"), ("campaign", "report", "spring")):
        unknown = await lianyi(*command, cwd=tmp_path, **env)
        assert unknown.code == 1 and "spring" in unknown.err and "required" not in unknown.err, unknown
    report = await lianyi("leads", "report", cwd=tmp_path, **env)
    assert report.code == 0 and report.out.startswith("线索报表 "), report
    show = await lianyi("leads", "show", "7", cwd=tmp_path, **env)
    assert (show.code, show.err) == (1, "线索 7 不存在\n")
    render = await lianyi("sop", "render", "nurture", "--contact", "wmWang", cwd=tmp_path, **env)
    assert render.code == 0 and "王建国您好，我是北京示例4S店的张三" in render.out, render
    dry = await lianyi("sop", "dry-run", "nurture", "--days", "2", cwd=tmp_path, **env)
    assert dry.code == 0, dry


async def test_several_corps_ask_for_LIANYI_CORP_ID(tmp_path: Path) -> None:
    url = await seeded_database(tmp_path / "lianyi.db")
    await add_corp(url, "wwother")
    refused = await lianyi("campaign", "list", cwd=tmp_path, database_url=url)
    assert refused.code == 1
    assert refused.err == f"数据库中有 2 个企业（wwother、{CORP}），请设置 LIANYI_CORP_ID 指定其中一个\n"
    chosen = await lianyi("campaign", "list", cwd=tmp_path, database_url=url, corp_id=CORP)
    assert (chosen.code, chosen.out) == (0, "还没有群发活动\n")
    unknown = await lianyi("leads", "report", cwd=tmp_path, database_url=url, corp_id="wwnobody")
    assert (unknown.code, unknown.err) == (1, "数据库中没有企业 wwnobody（LIANYI_CORP_ID），请先运行 lianyi sync\n")


# ---- a database that is not there or not migrated ------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("campaign", "list"),
        ("campaign", "report", "spring"),
        ("leads", "report"),
        ("leads", "show", "1"),
        ("sop", "render", "nurture", "--contact", "wmWang"),
    ],
)
async def test_a_missing_sqlite_file_is_one_line_and_is_not_created(tmp_path: Path, command: tuple[str, ...]) -> None:
    folder = sop_folder(tmp_path)
    ran = await lianyi(*command, cwd=tmp_path, sop_dir=str(folder))  # the default URL: ./lianyi.db
    assert_one_line_naming_the_fix(ran)
    assert "sqlite+aiosqlite:///lianyi.db" in ran.err
    assert not (tmp_path / "lianyi.db").exists()


async def test_a_named_missing_sqlite_file_and_an_empty_one(tmp_path: Path) -> None:
    missing = tmp_path / "data" / "nothing.db"
    ran = await lianyi("campaign", "plan", "spring", cwd=tmp_path, database_url=f"sqlite+aiosqlite:///{missing}")
    assert_one_line_naming_the_fix(ran)
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    ran = await lianyi("leads", "report", cwd=tmp_path, database_url=f"sqlite+aiosqlite:///{empty}")
    assert_one_line_naming_the_fix(ran)


async def test_an_unmigrated_postgresql_database_is_one_line(tmp_path: Path) -> None:
    name = f"lianyi_empty_{os.getpid()}_{tmp_path.name[-12:]}".replace("-", "_").lower()
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        url = pg_async_url(name)
        folder = sop_folder(tmp_path)
        for command in (("campaign", "list"), ("sop", "dry-run", "nurture")):
            ran = await lianyi(*command, cwd=tmp_path, database_url=url, sop_dir=str(folder))
            assert_one_line_naming_the_fix(ran)
        absent = await lianyi("leads", "report", cwd=tmp_path, database_url=url + "_absent")
        assert_one_line_naming_the_fix(absent)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- SOP folders that fail `sop check`, and the two forms of --contact ------------------------------------------


@pytest.mark.parametrize("command", [("render", "nurture", "--contact", "wmWang"), ("dry-run", "nurture")])
async def test_render_and_dry_run_refuse_a_folder_that_fails_check(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = await seeded_database(tmp_path / "lianyi.db")
    folder = sop_folder(tmp_path)
    (folder / "policy.yaml").write_text("caps:\n  per_dya: 3\n", encoding="utf-8")
    (folder / "typo.yaml").write_text(NURTURE.replace("id: nurture", "id: typo").replace("steps:", "stpes:"), "utf-8")
    check = await lianyi("sop", "check", cwd=tmp_path, sop_dir=str(folder))
    ran = await lianyi("sop", *command, cwd=tmp_path, database_url=url, sop_dir=str(folder))
    assert ran.code == 1 and ran.out == ""
    problems = [line for line in check.out.splitlines() if " SOP0" in line]
    places = [line.split(" ")[0] for line in problems]
    assert "sop/policy.yaml:2:3" in places and "sop/typo.yaml:5:1" in places
    assert ran.err.splitlines() == [
        *problems,
        f"SOP 目录未通过检查（{len(problems)} 个问题），线上不会使用这些模板；请先修正（lianyi sop check）",
    ]


async def test_render_takes_the_external_userid_or_the_contact_number(tmp_path: Path) -> None:
    url = await seeded_database(tmp_path / "lianyi.db")
    env = {"database_url": url, "sop_dir": str(sop_folder(tmp_path))}
    number = await contact_number(url, "wmWang")
    for given in ("wmWang", str(number)):
        ran = await lianyi("sop", "render", "nurture", "--contact", given, cwd=tmp_path, **env)
        assert ran.code == 0, ran
        assert "客户：王建国（wmWang）" in ran.out
    unknown = await lianyi("sop", "render", "nurture", "--contact", str(number + 100), cwd=tmp_path, **env)
    assert unknown.code == 1
    assert unknown.err.startswith(f"找不到客户 {number + 100}（企业 {CORP}）；--contact 需要客户的 external_userid")


@pytest.mark.parametrize(
    "command", [("campaign", "approve", "spring", "--as", "op2"), ("staff", "token", "zhangsan", "--as", "root")]
)
async def test_commands_that_write_say_the_same_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    wecom = {
        "corp_id": TEST_CORP_ID,
        "callback_token": TEST_TOKEN,
        "callback_aes_key": TEST_AES_KEY,
        "secret_key": TEST_SECRET_KEY,
    }
    ran = await lianyi(*command, cwd=tmp_path, sop_dir=str(sop_folder(tmp_path)), **wecom)
    assert_one_line_naming_the_fix(ran)
    assert not (tmp_path / "lianyi.db").exists()
