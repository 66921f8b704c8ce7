"""Roster import: YAML and CSV parsing with exact problem positions, the upsert on both databases, the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import col, select

from bot.cli import cli
from scrm.audit import canonical_digest
from scrm.db import SessionFactory
from scrm.leads.roster import ROSTER_UNMATCHED, RosterError, import_roster, parse_roster, parse_rosters
from scrm.models import AuditLog, Corp, Dealer, Staff
from scrm.models.accounts import UserRole
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_SECRET_KEY, TEST_TOKEN
from tests.users_support import Account, add_accounts

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROLES = "advisor（顾问/销售顾问）、manager（经理/店长/销售经理）、operator（运营）"
SPLIT_HINT = "请拆成两段，例如 fri 18:00-24:00; sat 00:00-02:00"
EXAMPLES = [DOCS / "roster.example.yaml", DOCS / "roster_dealers.example.csv", DOCS / "roster_staff.example.csv"]


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def problems_of(*paths: Path) -> list[str]:
    with pytest.raises(RosterError) as caught:
        parse_rosters(paths)
    return [str(p).replace(str(paths[0].parent) + "/", "") for p in caught.value.problems]


# -- parsing: YAML ------------------------------------------------------------------------------------


def test_yaml_fields_are_cleaned(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "dealers:\n  - code: BJ001\n    brands: 领航汽车|远航\n    models: [L7, L9]\n"
        "staff:\n  - userid: zw\n    role: 店长\n    capacity: 0\n    active: false\n    dealer: BJ001\n    phone_x:\n",
    )
    assert problems_of(path) == [
        "r.yaml:11:5 未知的字段 “phone_x”，成员可用：userid、name、dealer、role、duty_hours、capacity、active"
    ]
    path.write_text(path.read_text(encoding="utf-8").replace("    phone_x:\n", "    name:\n"), encoding="utf-8")
    roster = parse_roster(path)
    assert roster.dealers[0].values == {"brands": ["领航汽车", "远航"], "models": ["L7", "L9"]}
    assert roster.staff[0].values == {"role": "manager", "capacity": 0, "active": False}  # `name:` = not given
    assert roster.staff[0].dealer_code == "BJ001"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dealers:\n  - code: BJ001\n    nmae: 北京店\n", "r.yaml:3:5 未知的字段 “nmae”（是否想写 name？）"),
        ("dealers:\n  - name: 北京店\n", "r.yaml:2:5 缺少 code"),
        ("dealers:\n  - code: BJ-001\n", "r.yaml:2:11 code：门店代码 “BJ-001” 无效：只能是 1–16 位字母或数字"),
        ("dealers:\n  - code: 10001\n", 'r.yaml:2:11 code：应为文字，数字请加引号（例如 "10001"，以免丢掉开头的 0）'),
        ("dealers:\n  - code: A12345678901234567\n", "r.yaml:2:11 code：最多 16 个字符（现在 18 个）"),
        (
            "dealers:\n  - code: BJ1\n    opening_hours: mon-fri 18:00-02:00\n",
            f"r.yaml:3:28 opening_hours：时间段 “18:00-02:00” 跨过了午夜，{SPLIT_HINT}",
        ),
        (
            'dealers:\n  - code: BJ1\n    opening_hours: "mon-frx 09:00-18:00"\n',
            "r.yaml:3:25 opening_hours：无法识别的星期 “frx”，可写 mon…sun、周一…周日、daily 或 每天",
        ),
        ("dealers:\n  - code: BJ1\n    brands: 5\n", "r.yaml:3:13 brands：应为列表（YAML 列表，或用 | 、 分隔的文字）"),
        (
            "staff:\n  - userid: zw\n    role: sales\n",
            f"r.yaml:3:11 role：角色 “sales” 无效，可选：{ROLES}",
        ),
        (
            "staff:\n  - userid: zw\n    role: advisr\n",
            f"r.yaml:3:11 role：角色 “advisr” 无效（是否想写 advisor？），可选：{ROLES}",
        ),
        ("staff:\n  - userid: zw\n    capacity: 501\n", "r.yaml:3:15 capacity：501 超出范围：应为 0–500"),
        (
            "staff:\n  - userid: zw\n    capacity: many\n",
            "r.yaml:3:15 capacity：“many” 不是整数：应为 0–500 的整数（同时跟进的线索数上限）",
        ),
        (
            "staff:\n  - userid: zw\n    active: maybe\n",
            "r.yaml:3:13 active：“maybe” 无效：应为 true/false（或 是/否）",
        ),
        (
            'staff:\n  - userid: zw\n    duty_hours: "daily 09:00-18:00; closed 2026-02-30"\n',
            "r.yaml:3:44 duty_hours：日期 2026-02-30 不存在",
        ),
        ("staf:\n  - userid: zw\n", "r.yaml:1:1 未知的字段 “staf”（是否想写 staff？）"),
        ("staff: zw\n", "r.yaml:1:8 staff 应是一个列表（每项以 “- ” 开头）"),
        ("staff:\n  - zw\n", "r.yaml:2:5 每一项应是一个映射（字段: 值）"),
        ("staff:\n  - userid: zw\n    userid: ls\n", "r.yaml:3:5 字段 userid 重复出现，后一个会覆盖前一个"),
        ("staff: [\n", "r.yaml:2:1 YAML 格式错误：expected the node content, but found '<stream end>'"),
        ("- a\n", "r.yaml:1:1 文件应是一个映射，含 dealers: 和/或 staff: 列表"),
        ("dealers: []\n", "r.yaml:1:1 文件中没有任何门店或成员"),
        ("# nothing yet\n", "r.yaml:1:1 文件为空：需要 dealers（门店）或 staff（成员）列表"),
        ("   \n", "r.yaml:1 文件为空"),
    ],
)
def test_yaml_problems_at_their_position(tmp_path: Path, text: str, expected: str) -> None:
    assert problems_of(write(tmp_path, "r.yaml", text)) == [expected]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "dealers:\n  - code: BJ1\n  - code: BJ1\nstaff:\n  - userid: a\n    capacity: -1\n  - userid: b\n    role: x\n",
    )
    found = problems_of(path)
    assert [line.split(" ")[0] for line in found] == ["r.yaml:6:15", "r.yaml:8:11", "r.yaml:3:5"]
    assert found[2] == "r.yaml:3:5 门店代码 BJ1 重复（首次出现在 r.yaml:2:5）"


# -- parsing: CSV -------------------------------------------------------------------------------------


def test_csv_with_bom_chinese_headers_and_list_cells(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.csv",
        "\ufeff门店代码,门店名称,品牌,车型,营业时间\nBJ1,北京店,领航|远航,L7、L9,mon-fri 09:00-18:00\n",
    )
    (dealer,) = parse_roster(path).dealers
    assert (dealer.code, dealer.values["brands"], dealer.values["models"]) == ("BJ1", ["领航", "远航"], ["L7", "L9"])
    assert dealer.values["opening_hours"] == "mon-fri 09:00-18:00"


def test_csv_empty_cells_are_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "userid,name,dealer,capacity\nzw,,,\n")
    (member,) = parse_roster(path).staff
    assert (member.values, member.dealer_code) == ({}, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("code,nmae\nBJ1,北京店\n", ["s.csv:1 未知的列 “nmae”（是否想写 name？）"]),
        ("code,name,name\nBJ1,a,b\n", ["s.csv:1 列 name（name）重复"]),
        ("foo,bar\n1,2\n", ["s.csv:1 无法判断是门店表还是成员表：表头需要含 code（门店代码）或 userid（成员账号）"]),
        ("code,name\n", ["s.csv:1 只有表头，没有数据行"]),
        ("\n\n", ["s.csv:1 文件为空"]),
        ("code,name\nBJ1,a\n,b\n", ["s.csv:3 缺少 code"]),
        ("code,name\nBJ1,a,extra\n", ["s.csv:2 比表头多出 1 列（文字中含逗号时请加引号）"]),
        (
            'code,address,opening_hours\nBJ1,"北京\n朝阳区",x\nSH2,上海,mon-fri 09:00-18:00; sat 10:00-24:30\n',
            [
                "s.csv:2 opening_hours：“x” 缺少时间段（例如 09:00-18:00，或写 closed 表示休息）（第 2 个字符）",
                "s.csv:4 opening_hours：时间 24:30 无效（00:00 至 24:00）（第 32 个字符）",
            ],
        ),
        (
            "userid,role,capacity\n\nzw,老板,20\nls,顾问,1.5\n",
            [
                f"s.csv:3 role：角色 “老板” 无效，可选：{ROLES}",
                "s.csv:4 capacity：“1.5” 不是整数：应为 0–500 的整数（同时跟进的线索数上限）",
            ],
        ),
        ("userid,dealer\nzw,BJ-1\nzw,BJ1\n", ["s.csv:2 dealer：门店代码 “BJ-1” 无效：只能是 1–16 位字母或数字"]),
        ("userid,name\nzw,a\nzw,b\n", ["s.csv:3 成员 zw 重复（首次出现在 s.csv:2）"]),
    ],
)
def test_csv_problems_at_their_physical_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, "s.csv", text)
    assert problems_of(path) == expected


def test_not_utf8_and_unknown_file_types(tmp_path: Path) -> None:
    gbk = write(tmp_path, "g.csv", "code,name\nBJ1,北京店\n", encoding="gbk")
    assert problems_of(gbk) == ["g.csv:1 文件不是 UTF-8 编码（Excel 请另存为“CSV UTF-8（逗号分隔）”）"]
    xlsx = write(tmp_path, "r.xlsx", "x")
    assert problems_of(xlsx) == ["r.xlsx:1 不支持的文件类型：只能导入 .yaml、.yml 或 .csv"]
    assert problems_of(tmp_path / "missing.csv")[0].startswith("missing.csv:1 无法读取文件：")


def test_duplicates_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "dealers:\n  - code: BJ1\n")
    second = write(tmp_path, "b.csv", "code,name\nBJ1,北京店\n")
    assert problems_of(first, second) == ["b.csv:2 门店代码 BJ1 重复（首次出现在 a.yaml:2:5）"]


def test_shipped_examples_parse() -> None:
    roster = parse_rosters(EXAMPLES)
    assert [d.code for d in roster.dealers] == ["BJ001", "SH002", "GZ003", "CD004"]
    assert len(roster.staff) == 11


# -- import -------------------------------------------------------------------------------------------


async def test_examples_import_cleanly_and_idempotently(session_factory: SessionFactory, importer: str) -> None:
    roster = parse_rosters(EXAMPLES)
    async with session_factory() as session, session.begin():
        first = await import_roster(session, TEST_CORP_ID, actor=importer, roster=roster)
    assert (first.dealers_created, first.staff_created, first.dealers_updated, first.staff_updated) == (4, 11, 0, 0)
    assert len(first.warnings) == 11
    assert "企业微信中未找到成员 zhangwei" in str(first.warnings[0])
    async with session_factory() as session, session.begin():
        again = await import_roster(session, TEST_CORP_ID, actor=importer, roster=roster)
    assert (again.dealers_unchanged, again.staff_unchanged, again.dealers_created, again.staff_created) == (4, 11, 0, 0)
    assert (again.dealers_updated, again.staff_updated) == (0, 0)
    async with session_factory() as session:
        dealer = (await session.exec(select(Dealer).where(Dealer.code == "BJ001"))).one()
        zw = (await session.exec(select(Staff).where(Staff.userid == "zhangwei"))).one()
        sunli = (await session.exec(select(Staff).where(Staff.userid == "sunli"))).one()
    assert (dealer.name, dealer.models, dealer.phone) == ("北京博瑞祥驰4S店", ["领航 L7", "领航 L9"], "010-65881234")
    assert (zw.dealer_id, zw.role, zw.capacity, zw.active, zw.extra) == (
        dealer.id,
        "advisor",
        25,
        True,
        {ROSTER_UNMATCHED: True},
    )
    assert (sunli.dealer_id, sunli.role, sunli.capacity) == (None, "operator", 20)


async def test_update_leaves_absent_fields_and_matches_synced_members(
    session_factory: SessionFactory, importer: str, tmp_path: Path
) -> None:
    async with session_factory() as session, session.begin():
        session.add(Corp(corp_id=TEST_CORP_ID))
        await session.flush()
        session.add(Dealer(corp_id=TEST_CORP_ID, code="BJ1", name="旧名", phone="010-1", brands=["领航"]))
        session.add(Staff(corp_id=TEST_CORP_ID, userid="zw", name="张伟", capacity=7, duty_hours="sat 10:00-12:00"))
    path = write(
        tmp_path, "r.yaml", "dealers:\n  - code: BJ1\n    name: 北京店\nstaff:\n  - userid: zw\n    dealer: BJ1\n"
    )
    async with session_factory() as session, session.begin():
        summary = await import_roster(session, TEST_CORP_ID, actor=importer, roster=parse_roster(path), strict=True)
    assert (summary.dealers_updated, summary.staff_updated, summary.warnings) == (1, 1, ())
    assert summary.text() == "新增门店 0，更新门店 1，门店未变化 0；新增成员 0，更新成员 1，成员未变化 0"
    async with session_factory() as session:
        dealer = (await session.exec(select(Dealer))).one()
        member = (await session.exec(select(Staff))).one()
    assert (dealer.name, dealer.phone, dealer.brands) == ("北京店", "010-1", ["领航"])
    assert (member.name, member.capacity, member.duty_hours, member.dealer_id, member.extra) == (
        "张伟",
        7,
        "sat 10:00-12:00",
        dealer.id,
        None,
    )


async def test_unknown_dealer_and_strict_members_write_nothing(
    session_factory: SessionFactory, importer: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "dealers:\n  - code: BJ1\nstaff:\n  - userid: zw\n    dealer: SH9\n  - userid: ls\n    dealer: BJ1\n",
    )
    roster = parse_roster(path)
    async with session_factory() as session:
        with pytest.raises(RosterError) as caught:
            await import_roster(session, TEST_CORP_ID, actor=importer, roster=roster)
        await session.rollback()
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:5:13 门店 SH9 不存在：本次导入和数据库中都没有这个门店代码"
    ]
    async with session_factory() as session:
        with pytest.raises(RosterError) as caught:
            await import_roster(
                session,
                TEST_CORP_ID,
                actor=importer,
                roster=parse_roster(write(tmp_path, "s.csv", "userid\nls\n")),
                strict=True,
            )
        await session.rollback()
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path}/s.csv:2 企业微信中未找到成员 ls（请检查账号，或先运行 lianyi sync 同步通讯录）"
    ]
    async with session_factory() as session:
        assert (await session.exec(select(Dealer))).all() == []
        assert (await session.exec(select(Staff))).all() == []


async def test_staff_may_name_a_dealer_already_stored(
    session_factory: SessionFactory, importer: str, tmp_path: Path
) -> None:
    async with session_factory() as session, session.begin():
        session.add(Corp(corp_id=TEST_CORP_ID))
        await session.flush()
        session.add(Dealer(corp_id=TEST_CORP_ID, code="SH9"))
    path = write(tmp_path, "s.csv", "userid,dealer\nzw,SH9\n")
    async with session_factory() as session, session.begin():
        summary = await import_roster(session, TEST_CORP_ID, actor=importer, roster=parse_roster(path))
    assert summary.staff_created == 1
    async with session_factory() as session:
        dealer = (await session.exec(select(Dealer))).one()
        assert (await session.exec(select(Staff))).one().dealer_id == dealer.id


# -- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def runner(database_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name, value in {
        "CORP_ID": TEST_CORP_ID,
        "CALLBACK_TOKEN": TEST_TOKEN,
        "CALLBACK_AES_KEY": TEST_AES_KEY,
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "LOG_JSON": "false",
    }.items():
        monkeypatch.setenv("LIANYI_" + name, value)
    return CliRunner()


async def test_cli_dry_run_then_import_then_again(
    runner: CliRunner, session_factory: SessionFactory, importer: str
) -> None:
    files = [str(p) for p in EXAMPLES] + ["--as", importer]
    dry = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", *files, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[-1] == (
        "试运行（未写入）：新增门店 4，更新门店 0，门店未变化 0；新增成员 11，更新成员 0，成员未变化 0"
    )
    assert "警告：企业微信中未找到成员 zhangwei" in dry.output
    async with session_factory() as session:
        assert (await session.exec(select(Dealer))).all() == []
    done = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", *files])
    assert (done.exit_code, done.output.splitlines()[-1]) == (
        0,
        "新增门店 4，更新门店 0，门店未变化 0；新增成员 11，更新成员 0，成员未变化 0",
    )
    again = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", *files])
    assert (
        again.output.splitlines()[-1] == "新增门店 0，更新门店 0，门店未变化 4；新增成员 0，更新成员 0，成员未变化 11"
    )
    async with session_factory() as session:
        assert len((await session.exec(select(Staff))).all()) == 11


async def test_cli_errors_exit_1_and_write_nothing(
    runner: CliRunner, session_factory: SessionFactory, tmp_path: Path, importer: str
) -> None:
    bad = write(tmp_path, "bad.csv", "userid,role\nzw,advisor\nls,boss\n")
    result = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", str(bad), "--as", importer])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "发现 1 个错误，未写入任何数据"
    assert result.output.startswith(f"{bad}:3 role：角色 “boss” 无效")
    strict = await asyncio.to_thread(
        runner.invoke, cli, ["roster", "import", str(EXAMPLES[0]), "--strict", "--as", importer]
    )
    assert strict.exit_code == 1
    assert strict.output.splitlines()[-1] == "发现 6 个错误，未写入任何数据"
    async with session_factory() as session:
        assert (await session.exec(select(Staff))).all() == []
        assert (await session.exec(select(Dealer))).all() == []


async def test_cli_import_is_audited_under_the_real_user(
    runner: CliRunner, session_factory: SessionFactory, importer: str
) -> None:
    """Issue 13, attack 3: roster import granted roles unaudited. Now only a user holding roster.import may, and
    the row names them, the counts and digests of the touched rows before and after."""
    await add_accounts(session_factory, (Account("mgr", UserRole.MANAGER, dealer_code="BJ001"),))
    files = [str(p) for p in EXAMPLES]
    for actor, line in (
        ("ghost", "没有用户 ghost（先用 lianyi user add 创建）"),
        ("mgr", "用户 mgr（经销商经理）无权执行此操作（roster.import）"),
    ):
        refused = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", *files, "--as", actor])
        assert (refused.exit_code, refused.output.strip().splitlines()[-1]) == (1, line)
    dry = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", *files, "--dry-run", "--as", importer])
    assert dry.exit_code == 0, dry.output
    async with session_factory() as session:
        assert (await session.exec(select(AuditLog))).all() == []  # refused or dry: nothing written, not even a row
    for _ in range(2):
        done = await asyncio.to_thread(runner.invoke, cli, ["roster", "import", *files, "--as", importer])
        assert done.exit_code == 0, done.output
    async with session_factory() as session:
        rows = (await session.exec(select(AuditLog).order_by(col(AuditLog.id)))).all()
        staff = {s.userid: s.model_dump() for s in (await session.exec(select(Staff))).all()}
        dealers = {d.code: d.model_dump() for d in (await session.exec(select(Dealer))).all()}
    assert [(r.action, r.actor, r.corp_id, r.subject_type) for r in rows] == [
        ("roster.imported", importer, TEST_CORP_ID, "roster")
    ] * 2
    first, second = (r.detail or {} for r in rows)
    assert (first["dealers"], first["staff"]) == ({"created": 4, "updated": 0}, {"created": 11, "updated": 0})
    assert first["files"] == [p.name for p in EXAMPLES]
    after = canonical_digest({"dealers": dict(sorted(dealers.items())), "staff": dict(sorted(staff.items()))})
    assert first["before_sha256"] == canonical_digest({"dealers": {}, "staff": {}})
    assert first["after_sha256"] == after == second["before_sha256"] == second["after_sha256"]  # again: no change
