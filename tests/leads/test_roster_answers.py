"""``dealer.answers`` as a roster field: YAML mapping and CSV cell, stored, validated at file:line[:col], and
reaching the keyword-reply templates."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from scrm.audience import dealer_variables
from scrm.db import SessionFactory
from scrm.leads.roster import RosterError, import_roster, parse_roster, parse_rosters
from scrm.models import Dealer
from scrm.sop.render import SopRenderer
from scrm.sop.source import load_folder
from scrm.templating.context import SAMPLE_NOW, build_context
from tests.conftest import TEST_CORP_ID

SOP_DIR = Path(__file__).resolve().parents[2] / "sop_templates"
YAML = """\
dealers:
  - code: BJ001
    name: 北京望京店
    answers:
      price: 本月全系补贴 2 万元，落地价私信顾问。
      test_drive: 每天都可试驾，提前一天预约。
"""
CSV = (
    "code,name,answers\n"
    'SH002,上海店,"price=本月补贴 1 万元；置换另有补贴; address=上海市闵行区沪闵路 6088 号"\n'
    'GZ003,广州店,"{""test_drive"": ""周末可试驾""}"\n'
    "CD004,成都店,\n"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(RosterError) as caught:
        parse_rosters([path])
    return [str(p).replace(str(path.parent) + "/", "") for p in caught.value.problems]


def test_yaml_and_csv_answers_are_parsed(tmp_path: Path) -> None:
    yaml_roster = parse_roster(write(tmp_path, "r.yaml", YAML))
    assert yaml_roster.dealers[0].values["answers"] == {
        "price": "本月全系补贴 2 万元，落地价私信顾问。",
        "test_drive": "每天都可试驾，提前一天预约。",
    }
    csv_roster = parse_roster(write(tmp_path, "d.csv", CSV))
    assert [d.values.get("answers") for d in csv_roster.dealers] == [
        {"price": "本月补贴 1 万元；置换另有补贴", "address": "上海市闵行区沪闵路 6088 号"},
        {"test_drive": "周末可试驾"},
        None,  # an empty cell: not given, the stored answers stay
    ]


async def test_imported_answers_are_stored_and_reach_the_keyword_reply(
    session_factory: SessionFactory, importer: str, tmp_path: Path
) -> None:
    roster = parse_rosters([write(tmp_path, "r.yaml", YAML), write(tmp_path, "d.csv", CSV)])
    async with session_factory() as session, session.begin():
        summary = await import_roster(session, TEST_CORP_ID, actor=importer, roster=roster)
    assert summary.dealers_created == 4
    async with session_factory() as session:
        rows = {d.code: d for d in (await session.exec(select(Dealer))).all()}
    assert rows["BJ001"].answers == {
        "price": "本月全系补贴 2 万元，落地价私信顾问。",
        "test_drive": "每天都可试驾，提前一天预约。",
    }
    assert rows["CD004"].answers is None
    folder = load_folder(SOP_DIR)
    for template_id, code, expected in (
        ("group_keyword_price", "BJ001", "本月全系补贴 2 万元，落地价私信顾问。"),
        ("group_keyword_price", "SH002", "本月补贴 1 万元；置换另有补贴"),
        ("group_keyword_address", "SH002", "上海市闵行区沪闵路 6088 号"),
    ):
        bundle = folder.bundles[template_id]
        message = bundle.template.steps[0].group_message
        assert message is not None
        context = build_context(dealer=dealer_variables(rows[code]), group={"chat_id": "wrX"}, now=SAMPLE_NOW)
        assert SopRenderer(bundle).render(message, context).text == expected
    inline = folder.bundles["group_keyword_price"]
    context = build_context(dealer=dealer_variables(rows["GZ003"]), now=SAMPLE_NOW)
    assert SopRenderer(inline).render_text('{{ dealer.answers["test_drive"] }}', context) == "周末可试驾"


async def test_a_second_import_replaces_the_mapping_and_an_absent_field_keeps_it(
    session_factory: SessionFactory, importer: str, tmp_path: Path
) -> None:
    async with session_factory() as session, session.begin():
        await import_roster(session, TEST_CORP_ID, actor=importer, roster=parse_roster(write(tmp_path, "r.yaml", YAML)))
    changed = "dealers:\n  - code: BJ001\n    answers: {price: 新政策}\n"
    async with session_factory() as session, session.begin():
        summary = await import_roster(
            session, TEST_CORP_ID, actor=importer, roster=parse_roster(write(tmp_path, "r.yaml", changed))
        )
    assert summary.dealers_updated == 1
    async with session_factory() as session, session.begin():
        summary = await import_roster(
            session,
            TEST_CORP_ID,
            actor=importer,
            roster=parse_roster(write(tmp_path, "r.yaml", "dealers:\n  - code: BJ001\n")),
        )
    assert summary.dealers_unchanged == 1
    async with session_factory() as session:
        dealer = (await session.exec(select(Dealer))).one()
    assert dealer.answers == {"price": "新政策"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "dealers:\n  - code: BJ001\n    answers:\n      Price: 优惠\n",
            "r.yaml:4:7 answers：话题 “Price” 无效：只能用小写字母、数字和 _，以字母开头（如 price、test_drive）",
        ),
        ("dealers:\n  - code: BJ001\n    answers:\n      price:\n", "r.yaml:4:7 answers：话题 price 的答复应为文字"),
        (
            "dealers:\n  - code: BJ001\n    answers:\n      price: '  '\n",
            "r.yaml:4:7 answers：话题 price 的答复不能为空",
        ),
        (
            "dealers:\n  - code: BJ001\n    answers: [price, 优惠]\n",
            "r.yaml:3:14 answers：应为“话题: 答复”的映射（如 price: 本月优惠……）",
        ),
        (
            "dealers:\n  - code: BJ001\n    answers:\n      price: " + "好" * 1001 + "\n",
            "r.yaml:4:7 answers：话题 price 的答复最多 1000 个字符（现在 1001 个）",
        ),
    ],
)
def test_bad_yaml_answers_are_refused_at_their_position(tmp_path: Path, text: str, expected: str) -> None:
    assert problems_of(write(tmp_path, "r.yaml", text)) == [expected]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("price 优惠", "d.csv:3 answers：“price 优惠” 缺少 =：每项写成 话题=答复，多项用 ; 分隔"),
        (
            "试驾=每天",
            "d.csv:3 answers：话题 “试驾” 无效：只能用小写字母、数字和 _，以字母开头（如 price、test_drive）",
        ),
        ("price=优惠; price=补贴", "d.csv:3 answers：话题 price 重复"),
        ("price=", "d.csv:3 answers：话题 price 的答复不能为空"),
        ('{"price": ', "d.csv:3 answers：JSON 格式错误（第 10 个字符附近）"),
        ('{"price": 1}', "d.csv:3 answers：话题 price 的答复应为文字"),
    ],
)
def test_bad_csv_answers_are_refused_with_their_line(tmp_path: Path, cell: str, expected: str) -> None:
    quoted = '"' + cell.replace('"', '""') + '"'
    text = f"code,name,answers\nBJ001,北京店,\nSH002,上海店,{quoted}\n"
    assert problems_of(write(tmp_path, "d.csv", text)) == [expected]
