from __future__ import annotations

import pytest

from bot.settings import load_settings
from scrm.errors import SettingsError
from tests.conftest import TEST_AES_KEY, make_settings


def test_valid_settings_load() -> None:
    s = make_settings()
    assert s.corp_id == "wx5823bf96d3bd56c7"
    assert s.callback_max_age == 300


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"callback_aes_key": TEST_AES_KEY[:-1]}, "LIANYI_CALLBACK_AES_KEY must be 43 characters (got 42)"),
        ({"callback_aes_key": "!" * 43}, "LIANYI_CALLBACK_AES_KEY is not base64"),
        ({"database_url": "mysql://x"}, "LIANYI_DATABASE_URL must start with"),
        ({"redis_url": "http://x"}, "LIANYI_REDIS_URL must start with"),
        ({"port": 0}, "LIANYI_PORT "),
        ({"callback_max_age": -1}, "LIANYI_CALLBACK_MAX_AGE "),
    ],
)
def test_malformed_setting_names_the_variable(override: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        make_settings(**override)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("LIANYI_CORP_ID", "LIANYI_CALLBACK_TOKEN", "LIANYI_CALLBACK_AES_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(str(tmp_path))  # no .env file here
    with pytest.raises(SettingsError, match=r"^LIANYI_CORP_ID is required but not set$"):
        load_settings()


def test_sop_dir_must_exist(tmp_path: object) -> None:
    with pytest.raises(SettingsError, match=r"^LIANYI_SOP_DIR is not a folder: /nonexistent$"):
        make_settings(sop_dir="/nonexistent")


def test_default_sop_dir_falls_back_to_the_shipped_templates(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert make_settings().sop_dir.endswith("/sop_templates")
