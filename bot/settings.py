"""Settings from ``LIANYI_*`` environment variables (and a ``.env`` file).

The names of the first block are fixed by DESIGN.md. :func:`load_settings` turns a validation failure
into one :class:`~scrm.errors.SettingsError` line naming the variable, which the CLI prints before exiting.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scrm.errors import SettingsError
from scrm.keys import KeyRing, secret_key_problem

ENV_PREFIX = "LIANYI_"


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///lianyi.db"
DEFAULT_SOP_DIR = "sop_templates/"
BUNDLED_SOP_DIR = Path(__file__).resolve().parent.parent / "sop_templates"


def _check_database_url(value: str) -> str:
    if not (value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")):
        raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    return value


def _check_sop_dir(value: str) -> str:
    path = Path(value)
    if path.is_dir():
        return str(path.resolve())
    if value == DEFAULT_SOP_DIR and BUNDLED_SOP_DIR.is_dir():
        return str(BUNDLED_SOP_DIR)  # running outside the checkout: use the shipped templates
    raise ValueError(f"is not a folder: {value}")


def _check_secret_key(value: str) -> str:
    problem = secret_key_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def key_ring(settings: ContentSettings) -> KeyRing:
    """The secret keys of ``settings``; SettingsError when LIANYI_SECRET_KEY is not set (QuerySettings)."""
    if not settings.secret_key:
        raise SettingsError("LIANYI_SECRET_KEY is required but not set")
    return KeyRing(settings.secret_key, settings.secret_key_previous)


def _check_redis_url(value: str) -> str:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix:// (or be empty)")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- fixed by DESIGN.md -------------------------------------------------------------------------
    corp_id: str = Field(min_length=1, max_length=64, description="CorpID (企业ID); the callback receiver id")
    callback_token: str = Field(min_length=1, max_length=32, description="Callback Token")
    callback_aes_key: str = Field(description="Callback EncodingAESKey (43 characters)")
    callback_max_age: int = Field(
        default=300, ge=0, description="Seconds a callback timestamp may lag or lead; 0 turns the check off"
    )
    app_secret: str = Field(default="", description="Secret of the self-built app used for the API")
    agent_id: int = Field(default=0, ge=0, description="AgentID of the self-built app (app messages)")
    wecom_api_base: str = Field(default="https://qyapi.weixin.qq.com", description="WeCom API base URL")
    database_url: str = Field(default=DEFAULT_DATABASE_URL, description="SQLAlchemy async URL")
    redis_url: str = Field(default="", description="Redis URL; empty = in-process backends (one process)")
    host: str = Field(default="127.0.0.1", description="Address `lianyi serve` listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="Port `lianyi serve` listens on")
    sop_dir: str = Field(default=DEFAULT_SOP_DIR, description="Folder of SOP templates and policy")

    # --- ours ----------------------------------------------------------------------------------------
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest callback body accepted")
    log_level: str = Field(default="INFO", description="Log level (DEBUG, INFO, WARNING, ERROR)")
    log_json: bool = Field(default=True, description="JSON log lines (false = plain text)")
    instance_id: str = Field(default="", description="Name of this process in claims and locks (default host:pid)")
    redis_prefix: str = Field(default="lianyi", description="Prefix of every Redis key")
    inbox_partitions: int = Field(default=16, ge=1, le=1024, description="Inbox partitions (ordering lanes)")
    worker_max_attempts: int = Field(default=8, ge=1, description="Handler attempts before dead-lettering")
    outbox_lease_seconds: float = Field(
        default=60.0, ge=10, le=600, description="How long a claimed command is ours before a crash hands it on"
    )
    outbox_max_attempts: int = Field(default=10, ge=1, description="Command attempts before it is dead")
    api_rate_per_minute: int = Field(
        default=6000, ge=1, le=10000, description="Calls per minute per API path (WeCom allows 10,000)"
    )
    campaign_calls_per_minute: int = Field(
        default=3000,
        ge=1,
        le=10000,
        description="add_msg_template calls per minute a campaign run is paced at (the API limiter still guards)",
    )
    campaign_poll_seconds: float = Field(
        default=300.0,
        ge=1.0,
        le=3600.0,
        description="How often a young group-send task is polled for confirmation and results",
    )
    member_messages_per_minute: int = Field(
        default=25, ge=1, le=30, description="App messages per staff member per minute (WeCom drops >30)"
    )
    member_messages_per_hour: int = Field(
        default=900, ge=1, le=1000, description="App messages per staff member per hour (WeCom drops >1000)"
    )
    group_refetch_delay: float = Field(
        default=2.0, ge=0, description="Seconds to wait before groupchat/get after a group change"
    )
    public_url: str = Field(
        default="", description="Public base URL of this server: tracked links (/l/…) and advisor task cards"
    )
    sop_tick_seconds: float = Field(default=5.0, gt=0, description="How often the leader runs due SOP steps")
    leader_ttl_seconds: float = Field(
        default=15.0, ge=1.0, description="Scheduler leader lock lifetime; a dead leader is replaced this fast"
    )
    aibot_token: str = Field(default="", max_length=32, description="AI bot (智能机器人) callback Token; empty = off")
    aibot_aes_key: str = Field(default="", description="AI bot callback EncodingAESKey (43 characters)")
    ingest_token: str = Field(
        default="", description="Bearer token of POST /ingest/messages and /ingest/behaviours; empty = off"
    )
    ingest_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest ingest request body accepted"
    )
    inbox_backend: Literal["auto", "sql"] = Field(
        default="auto", description="auto = Redis Streams when LIANYI_REDIS_URL is set, else SQL; sql = always SQL"
    )
    redis_accept_volatile: bool = Field(
        default=False, description="Run the edge on a Redis inbox that does not persist (tests, demo): callbacks lost"
    )
    redis_durability_check_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="How often the edge re-checks that the Redis inbox persists"
    )
    message_retention_days: int = Field(
        default=365, ge=0, description="Days message text is kept (then blanked, the row kept); 0 = forever"
    )
    lost_customer_retention_days: int = Field(
        default=30,
        ge=0,
        description="Days after a lost customer's last relation was deleted until their message text goes; 0 = off",
    )
    reconcile_minutes: float = Field(
        default=60.0, ge=0, description="Minutes between reconciliations with WeCom (also at leader start); 0 = off"
    )
    ingest_batch_records: int = Field(
        default=100, ge=1, le=5000, description="Most ingest records per write transaction (bounds the write lock)"
    )
    ingest_batch_seconds: float = Field(
        default=0.2, gt=0, le=60, description="An ingest write transaction commits once it has run this long"
    )
    secret_key: str = Field(description="The one server secret every token, session, CSRF and link key derives from")
    secret_key_previous: str = Field(default="", description="The secret key before a rotation (verifies only)")
    session_max_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="Lifetime of a console session, from sign-in"
    )

    @field_validator("secret_key")
    @classmethod
    def _secret_key_strength(cls, value: str) -> str:
        return _check_secret_key(value)

    @field_validator("secret_key_previous")
    @classmethod
    def _previous_key_strength(cls, value: str) -> str:
        return _check_secret_key(value) if value else value

    @model_validator(mode="after")
    def _secret_key_is_its_own(self) -> Settings:
        for name, other in (("CALLBACK_AES_KEY", self.callback_aes_key), ("APP_SECRET", self.app_secret)):
            if other and other in (self.secret_key, self.secret_key_previous):
                raise ValueError(f"LIANYI_SECRET_KEY must not equal LIANYI_{name}: generate a key of its own")
        if self.aibot_aes_key and self.aibot_aes_key in (self.secret_key, self.secret_key_previous):
            raise ValueError("LIANYI_SECRET_KEY must not equal LIANYI_AIBOT_AES_KEY: generate a key of its own")
        return self

    @field_validator("ingest_token")
    @classmethod
    def _ingest_token_strength(cls, value: str) -> str:
        if value and len(value) < 24:
            raise ValueError(f"must be at least 24 characters (got {len(value)}); e.g. openssl rand -hex 24")
        return value

    @field_validator("aibot_aes_key")
    @classmethod
    def _aibot_key_shape(cls, value: str) -> str:
        return cls._aes_key_shape(value) if value else value

    @field_validator("callback_aes_key")
    @classmethod
    def _aes_key_shape(cls, value: str) -> str:
        if len(value) != 43:
            raise ValueError(f"must be 43 characters (got {len(value)})")
        try:
            key = base64.b64decode(value + "=", validate=True)
        except binascii.Error as exc:
            raise ValueError("is not base64") from exc
        if len(key) != 32:
            raise ValueError("does not decode to 32 bytes")
        return value

    _database_url_scheme = field_validator("database_url")(_check_database_url)
    _redis_url_scheme = field_validator("redis_url")(_check_redis_url)

    _sop_dir_exists = field_validator("sop_dir")(_check_sop_dir)

    @field_validator("wecom_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value


class StorageSettings(BaseSettings):
    """The subset needed by commands that only touch storage (``lianyi migrate``, ``deadletter``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = ""
    redis_prefix: str = "lianyi"
    inbox_partitions: int = Field(default=16, ge=1, le=1024)

    _database_url_scheme = field_validator("database_url")(_check_database_url)
    _redis_url_scheme = field_validator("redis_url")(_check_redis_url)


class ContentSettings(Protocol):
    """What rendering content needs: the SOP folder (policy) and the tracked-link key (Settings, QuerySettings)."""

    @property
    def sop_dir(self) -> str: ...

    @property
    def public_url(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def secret_key_previous(self) -> str: ...


class QuerySettings(BaseSettings):
    """What commands that only read or plan from the database need (reports, previews): no WeCom secrets.

    ``corp_id`` may be empty: such commands then use the only corp in the database. ``secret_key`` is needed
    only to sign tracked links (when ``public_url`` is set).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    corp_id: str = Field(default="", max_length=64)
    sop_dir: str = DEFAULT_SOP_DIR
    public_url: str = ""
    secret_key: str = ""
    secret_key_previous: str = ""
    campaign_calls_per_minute: int = Field(default=3000, ge=1, le=10000)

    _database_url_scheme = field_validator("database_url")(_check_database_url)
    _sop_dir_exists = field_validator("sop_dir")(_check_sop_dir)

    @field_validator("secret_key", "secret_key_previous")
    @classmethod
    def _secret_key_strength(cls, value: str) -> str:
        return _check_secret_key(value) if value else value


def load_settings(**overrides: Any) -> Settings:
    """Read settings; on failure raise SettingsError with one line naming the first bad variable."""
    return _load(Settings, overrides)


def load_storage_settings(**overrides: Any) -> StorageSettings:
    """Like :func:`load_settings` but needs no WeCom secrets."""
    return _load(StorageSettings, overrides)


def load_query_settings(**overrides: Any) -> QuerySettings:
    """Like :func:`load_settings` for commands that only read the database (no WeCom secrets)."""
    return _load(QuerySettings, overrides)


_S = TypeVar("_S", bound=BaseSettings)


def _load(cls: type[_S], overrides: dict[str, Any]) -> _S:
    try:
        return cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:  # a check across fields: its message names the variables
            raise SettingsError(msg) from None
        name = ENV_PREFIX + str(err["loc"][0]).upper()
        if err["type"] == "missing":
            raise SettingsError(f"{name} is required but not set") from None
        raise SettingsError(f"{name} {msg}") from None
