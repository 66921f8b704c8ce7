"""What the endpoint mixins of :class:`bot.wecom.client.WeComClient` (group sends, tags, transfers) need from it:
:meth:`~bot.wecom.client.WeComClient.call`, typed as a protocol so a mixin's methods type-check on their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from bot.wecom.ratelimit import Rate

EXTERNAL = "/cgi-bin/externalcontact"


class CallsWeCom(Protocol):
    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        rates: Sequence[Rate] = (),
    ) -> dict[str, Any]: ...


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """The request body without the optional fields the caller left out."""
    return {key: value for key, value in values.items() if value is not None}
