"""``lianyi privacy export|erase`` as an operator runs them: a real process, ``--as`` an existing admin only,
Chinese lines, the JSON document on stdout or in a file, and a second erase that says nothing was left."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from scrm.db import SessionFactory
from tests.privacy.world import ADMIN, CORP, EU, NAME, OPERATOR, TEXTS, database_dump, leaked, seed_users, seed_world

LIANYI = Path(sys.executable).with_name("lianyi")


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def lianyi(database_url: str, *args: str, cwd: Path) -> Ran:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update({"LIANYI_DATABASE_URL": database_url, "LIANYI_CORP_ID": CORP})
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def test_only_an_admin_may_export_or_erase(
    database_url: str, session_factory: SessionFactory, tmp_path: Path
) -> None:
    await seed_world(session_factory)
    await seed_users(session_factory)
    refused = await lianyi(database_url, "privacy", "erase", EU, "--as", OPERATOR, cwd=tmp_path)
    assert refused.code == 1 and refused.out == ""
    assert refused.err.strip() == f"用户 {OPERATOR}（运营）无权执行此操作（privacy）"
    ghost = await lianyi(database_url, "privacy", "export", EU, "--as", "ghost", cwd=tmp_path)
    assert ghost.code == 1 and ghost.out == "" and ghost.err.strip().startswith("没有用户 ghost")
    assert leaked(await database_dump(database_url), (NAME,)) == [NAME]  # nothing happened


async def test_export_then_erase_twice(database_url: str, session_factory: SessionFactory, tmp_path: Path) -> None:
    await seed_world(session_factory)
    await seed_users(session_factory)
    shown = await lianyi(database_url, "privacy", "export", EU, "--as", ADMIN, cwd=tmp_path)
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["tables"]["contacts"][0]["name"] == NAME

    saved = await lianyi(database_url, "privacy", "export", EU, "--as", ADMIN, "-o", "out.json", cwd=tmp_path)
    assert saved.code == 0 and saved.out == ""
    document = json.loads((tmp_path / "out.json").read_text("utf-8"))
    assert [m["text"] for m in document["tables"]["messages"]] == list(TEXTS)

    erased = await lianyi(database_url, "privacy", "erase", EU, "--as", ADMIN, cwd=tmp_path)
    assert erased.code == 0, erased.err
    assert erased.out.startswith(f"已删除客户 {EU} 的个人信息（客户 1 条、") and "消息 3 条" in erased.out
    again = await lianyi(database_url, "privacy", "erase", EU, "--as", ADMIN, cwd=tmp_path)
    assert again.code == 0 and "本次没有需要处理的数据" in again.out and "已于" in again.out
    assert leaked(await database_dump(database_url)) == []


async def test_a_blank_customer_id_is_refused(database_url: str, tmp_path: Path) -> None:
    ran = await lianyi(database_url, "privacy", "erase", " ", "--as", ADMIN, cwd=tmp_path)
    assert ran.code == 2 and "external_userid" in ran.err and "Traceback" not in ran.err
