"""The campaign file: validation with ``file:line:col`` and Chinese messages, the stored form, and the content
(Jinja2 checks against the sample context, per-target rendering, fingerprints)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from scrm.campaigns.content import CampaignRenderError, ContentRenderer, check_content
from scrm.campaigns.spec import CampaignContent, CampaignFileError, CampaignSpec, load_campaign_file
from scrm.templating.context import CHINA_TZ, build_context

# line numbers below refer to this file
VALID = """\
code: weekend_test_drive
name: 周末试驾活动
chat_type: group
audience:
  dealer: [BJ001]
content:
  text: "{{ group.name }}的朋友们，本周六{{ dealer.name }}试驾日！"
schedule: {now: true}
"""


def broken(tmp_path: Path, text: str, name: str = "broken.yaml") -> tuple[Path, CampaignFileError]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CampaignFileError) as caught:
        load_campaign_file(path)
    return path, caught.value


def only_problem(tmp_path: Path, text: str) -> tuple[int, int, str]:
    path, error = broken(tmp_path, text)
    assert len(error.problems) == 1, str(error)
    problem = error.problems[0]
    assert str(error) == f"{path}:{problem.line}:{problem.col} {problem.message}"
    return problem.line, problem.col, problem.message


def test_the_valid_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID, encoding="utf-8")
    spec = load_campaign_file(path)
    assert (spec.code, spec.chat_type, spec.schedule.kind, spec.audience.dealer) == (
        "weekend_test_drive",
        "group",
        "now",
        ["BJ001"],
    )


def test_unknown_keys_point_at_their_own_line(tmp_path: Path) -> None:
    line, col, message = only_problem(tmp_path, VALID.replace("audience:\n", "audiance:\n"))
    assert (line, col) == (4, 1)
    assert message.startswith("未知字段 audiance")
    nested = VALID.replace("  dealer: [BJ001]\n", "  dealer: [BJ001]\n  colour: red\n")
    line, col, message = only_problem(tmp_path, nested)
    assert (line, col) == (6, 3)
    assert message.startswith("未知字段 colour")


def test_unknown_key_suggestions_name_campaign_fields(tmp_path: Path) -> None:
    _, _, message = only_problem(tmp_path, VALID + "remnd: {after: 2h}\n")
    assert "remind" in message and "trigger" not in message


@pytest.mark.parametrize(
    ("schedule", "col", "expected"),
    [
        ('{cron: "0 25 * * *"}', 18, "cron 表达式无效：'0 25 * * *'"),
        ('{cron: "every friday"}', 18, "cron 表达式无效"),
        ('{now: true, cron: "0 19 * * 5"}', 1, "schedule 需要且只能有 now、at、cron 之一"),
        ('{at: "2026-12-05 19:00", cron: "0 19 * * 5"}', 1, "schedule 需要且只能有 now、at、cron 之一"),
        ("{}", 1, "schedule 需要且只能有 now、at、cron 之一"),
        ("{now: true, until: 2027-01-01}", 1, "until 只能与 cron 一起使用"),
        ('{at: "5 December"}', 16, "时间格式无效：5 December"),
    ],
)
def test_bad_schedules(tmp_path: Path, schedule: str, col: int, expected: str) -> None:
    line, found_col, message = only_problem(tmp_path, VALID.replace("{now: true}", schedule))
    assert (line, found_col) == (8, col)
    assert expected in message


@pytest.mark.parametrize(
    ("chat_type", "key", "value"),
    [("group", "stage", "[owner]"), ("group", "tags", "{any: [A]}"), ("single", "name", '"*车友群*"')],
)
def test_audience_keys_must_fit_the_chat_type(tmp_path: Path, chat_type: str, key: str, value: str) -> None:
    text = VALID.replace("chat_type: group", f"chat_type: {chat_type}").replace(
        "  dealer: [BJ001]\n", f"  dealer: [BJ001]\n  {key}: {value}\n"
    )
    line, col, message = only_problem(tmp_path, text)
    assert (line, col) == (6, 3)  # the offending key itself
    assert message.startswith(f"audience.{key} 不适用于 chat_type {chat_type}")


def test_remind_after_at_least_a_minute(tmp_path: Path) -> None:
    for after, expected in (("30s", "时长格式无效：'30s'"), ("0m", "时长必须大于 0")):
        line, col, message = only_problem(tmp_path, VALID + f"remind: {{after: {after}}}\n")
        assert (line, col) == (9, 17)
        assert expected in message
    # below a minute is only expressible in code (the file format's smallest unit is 1m): still refused
    data = {**CampaignSpec.model_validate(_valid_data()).stored(), "remind": {"after": timedelta(seconds=30)}}
    with pytest.raises(ValidationError, match=r"remind\.after 至少 1m"):
        CampaignSpec.model_validate(data)
    line, col, message = only_problem(tmp_path, VALID + "remind: {after: 1m, max: 31}\n")
    assert line == 9 and "max 不能大于 30" in message


@pytest.mark.parametrize("text", ['""', '"   "'])
def test_empty_content(tmp_path: Path, text: str) -> None:
    content = '  text: "{{ group.name }}的朋友们，本周六{{ dealer.name }}试驾日！"\n'
    line, col, message = only_problem(tmp_path, VALID.replace(content, f"  text: {text}\n"))
    assert (line, col) == (6, 1)
    assert message == "content 需要 text 或至少一个附件"


def test_at_most_nine_attachments(tmp_path: Path) -> None:
    link = '    - link: {title: 报名, url: "https://example.com/signup"}\n'

    def with_links(n: int) -> str:
        return VALID.replace("schedule:", "  attachments:\n" + link * n + "schedule:")

    path = tmp_path / "nine.yaml"
    path.write_text(with_links(9), encoding="utf-8")
    assert len(load_campaign_file(path).content.attachments) == 9
    line, col, message = only_problem(tmp_path, with_links(10))
    assert (line, col) == (8, 3)
    assert message == "附件最多 9 个，这里有 10 个"


@pytest.mark.parametrize("code", ["Weekend", "周末活动", "_push", "a" * 65, "a b"])
def test_bad_code(tmp_path: Path, code: str) -> None:
    line, col, message = only_problem(tmp_path, VALID.replace("code: weekend_test_drive", f'code: "{code}"'))
    assert (line, col) == (1, 7)
    assert message.startswith(f"code 的格式不对：{code}")


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    text = VALID.replace("code: weekend_test_drive", "code: Bad!").replace("{now: true}", '{cron: "0 25 * * *"}')
    path, error = broken(tmp_path, text + "extra: 1\n")
    assert [(p.line, p.col) for p in error.problems] == [(1, 7), (8, 18), (9, 1)]
    assert str(error).splitlines()[0].startswith(f"{path}:1:7 code 的格式不对")
    _, syntax = broken(tmp_path, VALID.replace("schedule: {now: true}", "schedule: {now: true"))
    assert syntax.problems[0].line >= 8 and re.search("[\u4e00-\u9fff]", syntax.problems[0].message)


def _valid_data() -> dict[str, object]:
    return {
        "code": "friday_owners",
        "name": "周五车主群推送",
        "chat_type": "group",
        "audience": {"dealer": ["BJ001", "SH002"], "name": "*车友群*", "members": {"min": 10}},
        "content": {
            "text": "{{ group.name }}的朋友们",
            "attachments": [{"link": {"title": "报名", "url": "https://x"}}],
        },
        "schedule": {"cron": "0 19 * * 5", "until": "2027-03-31"},
    }


def test_a_full_file_round_trips_through_its_stored_form(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    path.write_text(
        VALID.replace("  dealer: [BJ001]\n", "  dealer: [BJ001, SH002]\n  name: '*车友群*'\n  members: {min: 10}\n")
        .replace("  dealer: [BJ001, SH002]\n", "  dealer: [BJ001, SH002]\n  created: {from: 2026-01-01}\n")
        .replace(
            "schedule:", '  attachments:\n    - link: {title: 报名, url: "https://e.com/{{ dealer.code }}"}\nschedule:'
        )
        .replace("{now: true}", '{cron: "0 19 * * 5", until: 2027-03-31}')
        + "approval: true\nremind: {after: 1h30m, max: 2}\n",
        encoding="utf-8",
    )
    spec = load_campaign_file(path)
    stored = spec.stored()
    again = CampaignSpec.model_validate(json.loads(json.dumps(stored)))  # as the JSON column gives it back
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    assert again.remind.after == timedelta(minutes=90) and stored["remind"]["after"] == "90m"
    assert stored["audience"]["created"] == {"from": "2026-01-01", "to": None}
    # any change of meaning changes the hash
    changed = CampaignSpec.model_validate({**stored, "approval": False})
    assert changed.spec_hash() != spec.spec_hash()


def test_an_at_time_is_china_time_and_round_trips() -> None:
    data = {**_valid_data(), "schedule": {"at": "2026-12-05 19:00"}}
    spec = CampaignSpec.model_validate(data)
    assert spec.schedule.at is not None
    assert spec.schedule.at.astimezone(UTC) == datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    again = CampaignSpec.model_validate(json.loads(json.dumps(spec.stored())))
    assert again.schedule.at == spec.schedule.at and again.spec_hash() == spec.spec_hash()


# ---- content ---------------------------------------------------------------------------------------------


def test_check_content_reports_jinja_problems_in_chinese() -> None:
    syntax = check_content(CampaignContent(text="{{ group.name "))
    assert syntax is not None and syntax.code == "jinja_syntax"
    assert syntax.message_cn.startswith("Jinja2 语法错误：")
    undefined = check_content(CampaignContent(text="{{ grop.name }}的朋友们"))
    assert undefined is not None and (undefined.code, undefined.message_cn) == (
        "undefined_variable",
        "变量 grop 未定义",
    )
    field = check_content(CampaignContent(text="{{ group.nmae }}"))
    assert field is not None and field.code == "undefined_variable" and "没有这个字段：nmae" in field.message_cn
    link = {"link": {"title": "{{ delaer.name }}", "url": "https://e"}}
    in_link = CampaignContent.model_validate({"text": "hi", "attachments": [link]})
    assert (problem := check_content(in_link)) is not None and problem.message_cn == "变量 delaer 未定义"
    good = CampaignContent(text="{{ group.name }}：{{ dealer.name }}｜{{ staff.name }}｜{{ campaign.name }}")
    assert check_content(good) is None


NOW = datetime(2026, 12, 4, 19, 0, tzinfo=CHINA_TZ)


def group_context(name: str, dealer: str, code: str, owner: str = "张三") -> dict[str, object]:
    context = build_context(
        now=NOW,
        group={"chat_id": f"wr{name}", "name": name, "owner": "zhangsan", "owner_name": owner, "member_count": 50},
        staff={"userid": "zhangsan", "name": owner},
        dealer={"code": code, "name": dealer},
    )
    return {**context, "campaign": {"code": "friday", "name": "周五推送"}}


def test_renderer_fills_group_dealer_staff_and_link_fields() -> None:
    content = CampaignContent.model_validate(
        {
            "text": "{{ group.name }}的朋友们，{{ staff.name }}邀请大家到{{ dealer.name }}试驾（{{ campaign.name }}）",
            "attachments": [
                {
                    "link": {
                        "title": "{{ dealer.name }}报名",
                        "url": "https://example.com/s?d={{ dealer.code }}",
                        "desc": "{{ group.member_count }}位车友",
                    }
                },
                {"image": {"pic_url": "https://example.com/poster.png"}},
            ],
        }
    )
    rendered = ContentRenderer(content).render(group_context("望京车友群", "北京望京4S店", "BJ001"))
    assert rendered.text == "望京车友群的朋友们，张三邀请大家到北京望京4S店试驾（周五推送）"
    assert rendered.attachments == [
        {
            "msgtype": "link",
            "link": {"title": "北京望京4S店报名", "url": "https://example.com/s?d=BJ001", "desc": "50位车友"},
        },
        {"msgtype": "image", "image": {"pic_url": "https://example.com/poster.png"}},
    ]


def test_fingerprints_differ_iff_the_content_differs() -> None:
    dealer_only = ContentRenderer(
        CampaignContent.model_validate(
            {
                "text": "{{ dealer.name }}周末试驾日",
                "attachments": [{"link": {"title": "报名", "url": "https://e.com/{{ dealer.code }}"}}],
            }
        )
    )
    contexts = [
        group_context("一群", "望京店", "BJ001"),
        group_context("二群", "望京店", "BJ001"),  # same dealer: same message
        group_context("三群", "望京店", "BJ002"),  # only the link differs
        group_context("四群", "浦东店", "BJ001"),  # only the text differs
        group_context("五群", "望京店", "BJ001", owner="李四"),  # a variable the content does not use
    ]
    rendered = [dealer_only.render(c) for c in contexts]
    for a in rendered:
        for b in rendered:
            same_content = (a.text, a.attachments) == (b.text, b.attachments)
            assert (a.fingerprint == b.fingerprint) is same_content
    assert len({r.fingerprint for r in rendered}) == 3
    per_group = ContentRenderer(CampaignContent(text="{{ group.name }}：周末试驾日"))
    assert len({per_group.render(c).fingerprint for c in contexts}) == len(contexts)


def test_render_refuses_text_over_4000_bytes() -> None:
    renderer = ContentRenderer(CampaignContent(text="{{ group.name * 600 }}"))
    assert len(renderer.render(group_context("车友", "店", "BJ001")).text.encode()) == 2 * 3 * 600
    with pytest.raises(CampaignRenderError) as caught:
        renderer.render(group_context("车友群", "店", "BJ001"))  # 3 characters × 3 bytes × 600 = 5,400
    assert caught.value.code == "text_too_long" and "超过 4000 字节上限" in caught.value.message_cn


def test_bad_code_is_explained_in_words(tmp_path: Path) -> None:
    _, _, message = only_problem(tmp_path, VALID.replace("code: weekend_test_drive", 'code: "Weekend"'))
    assert message.endswith("（只能用小写字母、数字、_ 和 -，以字母或数字开头，最多 64 个字符）")
