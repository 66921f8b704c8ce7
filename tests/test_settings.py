from __future__ import annotations

import pytest

from bot.settings import load_settings
from scrm.errors import SettingsError
from tests.conftest import TEST_AES_KEY, TEST_SECRET_KEY, make_settings


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


def test_secret_key_is_required(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("LIANYI_SECRET_KEY", raising=False)
    monkeypatch.chdir(str(tmp_path))
    values = {"corp_id": "ww1", "callback_token": "t", "callback_aes_key": TEST_AES_KEY}
    with pytest.raises(SettingsError, match=r"^LIANYI_SECRET_KEY is required but not set$"):
        load_settings(**values)


@pytest.mark.parametrize(
    ("secret_key", "message"),
    [
        ("short-secret", "LIANYI_SECRET_KEY is too short: 12 characters, at least 43 needed (32 random bytes)"),
        ("a1b2c3d4" * 7 + "a1b2c3d", "LIANYI_SECRET_KEY is too short: 63 hex digits, at least 64 needed"),
        ("xyz-" * 12, "LIANYI_SECRET_KEY has fewer than 10 distinct"),
        ("ünïcode-" * 7, "LIANYI_SECRET_KEY must be printable ASCII without spaces"),
        ("with spaces " * 5, "LIANYI_SECRET_KEY must be printable ASCII without spaces"),
        (TEST_AES_KEY, "LIANYI_SECRET_KEY must not equal LIANYI_CALLBACK_AES_KEY: generate a key of its own"),
    ],
)
def test_a_weak_secret_key_is_refused_in_one_line(secret_key: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        make_settings(secret_key=secret_key)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_the_secret_key_must_not_be_the_app_secret() -> None:
    key = "app-secret-used-twice-0123456789abcdefghijklmnop"
    with pytest.raises(SettingsError, match=r"^LIANYI_SECRET_KEY must not equal LIANYI_APP_SECRET"):
        make_settings(secret_key=key, app_secret=key)
    with pytest.raises(SettingsError, match=r"^LIANYI_SECRET_KEY must not equal LIANYI_APP_SECRET"):
        make_settings(secret_key_previous=key, app_secret=key)


@pytest.mark.parametrize(
    "secret_key",
    [
        "0123456789abcdef" * 4,  # openssl rand -hex 32
        "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8=",  # openssl rand -base64 32 (44 chars)
        "q8R2vXc1ZmT0kLp7wYh4NbE6sUa9JdF3gQ5iOtKy_-V",  # secrets.token_urlsafe(32): 43 chars
    ],
)
def test_secret_keys_of_32_random_bytes_are_accepted(secret_key: str) -> None:
    assert make_settings(secret_key=secret_key).secret_key == secret_key


def test_every_purpose_gets_its_own_key_and_none_comes_from_the_aes_key() -> None:
    from bot.settings import key_ring
    from scrm.keys import KeyPurpose, derive_key

    ring = key_ring(make_settings())
    keys = {purpose: ring.key(purpose) for purpose in KeyPurpose}
    assert len(set(keys.values())) == len(KeyPurpose)
    assert all(len(k) == 32 for k in keys.values())
    assert not set(keys.values()) & {derive_key(TEST_AES_KEY, p) for p in KeyPurpose}
    rotated = key_ring(make_settings(secret_key="n" + TEST_SECRET_KEY[1:], secret_key_previous=TEST_SECRET_KEY))
    assert list(rotated.keys(KeyPurpose.SESSIONS))[1] == keys[KeyPurpose.SESSIONS]
    assert rotated.key(KeyPurpose.SESSIONS) != keys[KeyPurpose.SESSIONS]
