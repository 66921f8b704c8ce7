"""Reading a request body with a size limit, for every endpoint that takes one (callbacks, the AI bot, ingest,
the staff API): a declared Content-Length over the limit is refused before reading, and reading stops as soon as
the limit is passed, so an oversize body never sits in memory whole."""

from __future__ import annotations

from aiohttp import web

from scrm.errors import LianyiError


class BodyTooLarge(LianyiError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes; raises :class:`BodyTooLarge` (the caller answers 413)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"Content-Length {declared} exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    content = request.content
    while chunk := await content.readany():  # the whole body at once when it came in one packet
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
