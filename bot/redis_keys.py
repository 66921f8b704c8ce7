"""Every Redis key Lianyi uses, in one place.

All keys start with the configurable prefix (``LIANYI_REDIS_PREFIX``, default ``lianyi``) so tests and
several deployments can share one server. Add new keys here, never as string literals elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = "lianyi"

    # --- inbox (Redis Streams backend) ---
    def inbox_stream(self, partition: int) -> str:
        return f"{self.prefix}:inbox:stream:{partition}"

    def inbox_group(self) -> str:
        return f"{self.prefix}:inbox:workers"

    def inbox_dedup(self, dedup_key: str) -> str:
        return f"{self.prefix}:inbox:dedup:{dedup_key}"

    def inbox_partition_lease(self, partition: int) -> str:
        return f"{self.prefix}:inbox:lease:{partition}"

    def inbox_attempts(self) -> str:
        return f"{self.prefix}:inbox:attempts"

    def inbox_delayed(self) -> str:
        return f"{self.prefix}:inbox:delayed"

    def inbox_wakeup(self) -> str:
        """A short stream every ack/dead appends to, so claimers blocked in XREAD wake at once."""
        return f"{self.prefix}:inbox:wakeup"

    # --- WeCom client ---
    def access_token(self, corp_id: str, secret_fingerprint: str) -> str:
        return f"{self.prefix}:wecom:token:{corp_id}:{secret_fingerprint}"

    def access_token_lock(self, corp_id: str, secret_fingerprint: str) -> str:
        return f"{self.prefix}:wecom:token-lock:{corp_id}:{secret_fingerprint}"

    def rate_limit(self, bucket: str) -> str:
        return f"{self.prefix}:ratelimit:{bucket}"

    def api_blocked_until(self, api: str) -> str:
        return f"{self.prefix}:wecom:blocked:{api}"

    # --- outbox ---
    def outbox_wakeup(self) -> str:
        return f"{self.prefix}:outbox:wakeup"

    # --- scheduler ---
    def leader_lock(self) -> str:
        return f"{self.prefix}:scheduler:leader"

    # --- console sign-in ---
    def console_session(self, id_digest: str) -> str:
        return f"{self.prefix}:session:{id_digest}"

    def console_sessions_pattern(self) -> str:
        return f"{self.prefix}:session:*"

    def user_sessions(self, user_id: int) -> str:
        return f"{self.prefix}:user-sessions:{user_id}"

    def user_sessions_pattern(self) -> str:
        return f"{self.prefix}:user-sessions:*"

    def login_failures(self, scope: str, key_digest: str) -> str:
        return f"{self.prefix}:login-failures:{scope}:{key_digest}"

    def all_keys_pattern(self) -> str:
        return f"{self.prefix}:*"
