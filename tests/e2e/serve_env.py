"""The environment of a `lianyi serve` (or other CLI) subprocess that joins an in-test LocalStack."""

from __future__ import annotations

import os

from bot.emulator.localstack import LocalStack


def serve_env(stack: LocalStack, instance: str, **extra: str) -> dict[str, str]:
    """The stack's settings as LIANYI_* variables (no other LIANYI_* from the test's own environment), plus
    ``extra`` given without the prefix (``SOP_TICK_SECONDS="0.2"`` → LIANYI_SOP_TICK_SECONDS)."""
    s = stack.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANYI_")}
    env.update(
        {
            "LIANYI_CORP_ID": s.corp_id,
            "LIANYI_CALLBACK_TOKEN": s.callback_token,
            "LIANYI_CALLBACK_AES_KEY": s.callback_aes_key,
            "LIANYI_APP_SECRET": s.app_secret,
            "LIANYI_SECRET_KEY": s.secret_key,
            "LIANYI_AGENT_ID": str(s.agent_id),
            "LIANYI_WECOM_API_BASE": s.wecom_api_base,
            "LIANYI_DATABASE_URL": s.database_url,
            "LIANYI_REDIS_URL": s.redis_url,
            "LIANYI_REDIS_PREFIX": s.redis_prefix,
            "LIANYI_REDIS_ACCEPT_VOLATILE": str(s.redis_accept_volatile).lower(),
            "LIANYI_INSTANCE_ID": instance,
            "LIANYI_LOG_JSON": "false",
            "LIANYI_LOG_LEVEL": "WARNING",
        }
    )
    env.update({f"LIANYI_{name}": value for name, value in extra.items()})
    return env
