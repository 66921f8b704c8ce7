"""Reading SOP folders: YAML positions, error positions, message files, tags, whole folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from scrm.contact_policy import Policy
from scrm.sop.source import load_folder, load_template, template_files
from scrm.sop.spec import SopTemplate
from scrm.sop.tags import TagVocabulary, load_tags
from scrm.yaml_positions import Mark, YamlSyntaxError, parse_yaml

TEMPLATE = """\
id: nurture
name: 新客培育
kind: contact
trigger:
  event: contact.added
  channel: ad
steps:
  - welcome:
      by_channel: welcome
  - after: 1d
    at: 10:00
    private_message:
      text: |
        您好 {{ contact.name }}
        第二行
  - after: 3d
    private_message:
      file: nurture/day3.j2
      attachments:
        - link: {title: 预约试驾, url: "https://x.cn/td"}
"""
FILES = {
    "nurture.yaml": TEMPLATE,
    "welcome/default.j2": '{% include "_hi.j2" %}欢迎',
    "welcome/qr.j2": '{% include "_hi.j2" %}扫码欢迎',
    "welcome/_hi.j2": "您好",
    "welcome/notes.txt": "not a template",
    "nurture/day3.j2": '{% include "_sign.j2" %}第三天',
    "nurture/_sign.j2": "顾问 {{ staff.name }}",
    "nurture/unused.j2": "不属于任何步骤",
}


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# ---- positions --------------------------------------------------------------------------------------------


def test_keys_and_values_have_one_based_positions() -> None:
    document, duplicates = parse_yaml(TEMPLATE)
    source = document.source
    assert duplicates == []
    assert source.key(("trigger", "event")) == Mark(5, 3)
    assert source.value(("trigger", "event")) == Mark(5, 10)
    assert source.value(("steps", 1, "private_message", "text")) == Mark(13, 13)
    assert source.value(("steps", 2, "private_message", "attachments", 0, "link", "url")) == Mark(
        20, 36
    )  # columns count characters
    assert source.locate(("steps", 1, "private_message")) == Mark(12, 5)  # a mapping: its key
    assert source.locate(("steps", 1, "nothing", "here")) == Mark(10, 5)  # the deepest existing path
    assert source.locate(("nothing",)) == Mark(1, 1)


def test_dates_and_times_stay_strings_and_raw_is_json() -> None:
    document, _ = parse_yaml("dates: [2027-02-06, 2027-02-06 10:00]\nat: 10:00\nwhen: 09:30\n")
    assert document.data == {"dates": ["2027-02-06", "2027-02-06 10:00"], "at": 600, "when": "09:30"}
    json.dumps(document.data)


def test_block_scalar_lines_map_to_the_file() -> None:
    source = parse_yaml(TEMPLATE)[0].source
    text = ("steps", 1, "private_message", "text")
    assert source.text_line(text, 1) == Mark(14, 9)
    assert source.text_line(text, 2) == Mark(15, 9)
    inline = ("trigger", "event")
    assert source.text_line(inline, 1) == Mark(5, 10)


def test_syntax_error_has_position_and_chinese_message() -> None:
    with pytest.raises(YamlSyntaxError) as caught:
        parse_yaml("id: a\nsteps:\n  - at: 10:00\n   end: true\n")
    assert caught.value.mark == Mark(4, 4)
    assert caught.value.message == "缩进不一致，或“- ”列表与字段混在同一层"


def test_a_second_document_is_refused() -> None:
    with pytest.raises(YamlSyntaxError) as caught:
        parse_yaml("id: a\n---\nid: b\n")
    assert caught.value.message == "一个文件只能写一个模板（去掉多余的 ---）"


def test_duplicate_keys_are_found_at_the_second_key() -> None:
    _, duplicates = parse_yaml("id: a\ntrigger:\n  event: x\n  event: y\n")
    assert duplicates == [(Mark(4, 3), "字段 event 重复出现，后一个会覆盖前一个")]


def _errors(text: str) -> list[tuple[Mark, str]]:
    document, _ = parse_yaml(text)
    with pytest.raises(ValidationError) as caught:
        SopTemplate.model_validate(document.data)
    return [
        (document.source.for_error(tuple(e["loc"]), e["type"], e.get("ctx")), e["type"])
        for e in caught.value.errors(include_url=False)
    ]


def test_validation_errors_map_to_the_best_position() -> None:
    broken = TEMPLATE.replace("  channel: ad", "  channel: ad\n  keywords: [价格]").replace(
        "kind: contact", "knd: contact"
    )
    assert _errors(broken) == [
        (Mark(1, 1), "missing"),  # kind is missing: the template itself
        (Mark(7, 3), "filter_not_allowed"),  # ctx key: the keywords key under trigger
        (Mark(3, 1), "extra_forbidden"),  # the unknown key's own position
    ]


# ---- message files ----------------------------------------------------------------------------------------


def test_bundle_holds_the_files_the_template_may_render(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    loaded = load_template(tmp_path / "nurture.yaml", tmp_path)
    assert loaded.problems == []
    assert loaded.bundle is not None
    assert sorted(loaded.bundle.files) == [
        "nurture/_sign.j2",
        "nurture/day3.j2",
        "welcome/_hi.j2",
        "welcome/default.j2",
        "welcome/qr.j2",
    ]
    assert loaded.bundle.path == "nurture.yaml"
    assert loaded.bundle.raw["steps"][1]["at"] == 600
    json.dumps(loaded.bundle.snapshot())


def test_an_edited_message_file_is_a_new_version(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    before = load_template(tmp_path / "nurture.yaml", tmp_path).bundle
    write(tmp_path, {"nurture/_sign.j2": "顾问 {{ staff.name }} 敬上"})
    after = load_template(tmp_path / "nurture.yaml", tmp_path).bundle
    assert before is not None and after is not None
    assert before.version != after.version


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../x.j2", "路径 ../x.j2 超出了 SOP 目录"),
        ("/etc/passwd", "路径 /etc/passwd 应写成相对 SOP 目录的路径（用 /）"),
        ("nurture/../../x.j2", "路径 nurture/../../x.j2 超出了 SOP 目录"),
        ("nurture/none.j2", "消息文件不存在：nurture/none.j2"),
    ],
)
def test_message_files_must_exist_inside_the_folder(tmp_path: Path, path: str, message: str) -> None:
    write(tmp_path, {**FILES, "nurture.yaml": TEMPLATE.replace("nurture/day3.j2", path)})
    loaded = load_template(tmp_path / "nurture.yaml", tmp_path)
    assert [(p.line, p.col, p.code, p.message) for p in loaded.problems] == [(18, 13, "SOP019", message)]
    assert loaded.bundle is None


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    folder = tmp_path / "sop"
    write(outside, {"secret.j2": "secret"})
    write(folder, {**FILES, "nurture.yaml": TEMPLATE.replace("nurture/day3.j2", "link/secret.j2")})
    (folder / "link").symlink_to(outside)
    loaded = load_template(folder / "nurture.yaml", folder)
    assert [p.message for p in loaded.problems] == ["路径 link/secret.j2 超出了 SOP 目录"]


# ---- tags -------------------------------------------------------------------------------------------------


def test_tag_vocabulary_resolves_bare_and_grouped_names(tmp_path: Path) -> None:
    write(tmp_path, {"tags.yaml": "意向: [试驾, 价格]\n车主: [试驾, 已交车]\n"})
    tags, problems = load_tags(tmp_path / "tags.yaml", "tags.yaml")
    assert problems == []
    assert tags.resolve("价格") == ("意向", "价格")
    assert tags.resolve("车主/试驾") == ("车主", "试驾")
    assert tags.resolve("试驾") is None
    assert tags.problem("试驾") == "标签 试驾 在多个标签组中，请写成 组名/标签名：意向/试驾、车主/试驾"
    assert tags.problem("意向/已交车") == "未知标签 意向/已交车（tags.yaml 中没有）"
    assert tags.problem("已交车") is None


def test_missing_tags_file_is_an_empty_vocabulary(tmp_path: Path) -> None:
    tags, problems = load_tags(tmp_path / "tags.yaml", "tags.yaml")
    assert (tags, problems) == (TagVocabulary(), [])


# ---- folders ----------------------------------------------------------------------------------------------


def test_load_folder_returns_bundles_policy_and_tags(tmp_path: Path) -> None:
    write(tmp_path, {**FILES, "tags.yaml": "意向: [试驾]\n", "policy.yaml": "caps: {per_day: 1, per_week: 3}\n"})
    load = load_folder(tmp_path)
    assert load.problems == []
    assert list(load.bundles) == ["nurture"]
    assert load.policy.caps.per_day == 1
    assert load.tags.resolve("试驾") == ("意向", "试驾")
    assert [p.name for p in template_files(tmp_path)] == ["nurture.yaml"]


def test_a_bad_policy_is_a_problem_and_the_defaults_apply(tmp_path: Path) -> None:
    write(tmp_path, {**FILES, "policy.yaml": "quiet_hours: {start: '25:00'}\n"})
    load = load_folder(tmp_path)
    assert [(Path(p.path).name, p.line, p.code) for p in load.problems] == [("policy.yaml", 1, "SOP022")]
    assert load.policy == Policy()
    assert list(load.bundles) == ["nurture"]


def test_duplicate_ids_and_unknown_start_sop(tmp_path: Path) -> None:
    copy = TEMPLATE.replace("name: 新客培育", "name: 副本")
    third = TEMPLATE.replace("id: nurture", "id: third") + "  - start_sop: nurture_two\n"
    write(tmp_path, {**FILES, "copy.yml": copy, "third.yaml": third})
    load = load_folder(tmp_path)
    found = [(Path(p.path).name, p.line, p.col, p.code) for p in load.problems]
    assert found == [("nurture.yaml", 1, 5, "SOP016"), ("third.yaml", 21, 16, "SOP017")]
    assert list(load.bundles) == ["nurture"]  # copy.yml sorts first: the later nurture.yaml is the duplicate
    assert load.bundles["nurture"].path == "copy.yml"
