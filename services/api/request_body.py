"""Reading request bodies.

A body with a Content-Length is done once that many bytes arrived: the server's
end-of-body message is not waited for: some servers send it well after the last bytes
(granian, which served the API before, about 1.4 ms after on this machine).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from starlette.requests import Request

from services.api.problems import ApiError

__all__ = ["MAX_JSON_DEPTH", "body_chunks", "check_json_depth", "read_body"]

# How deep JSON a request may nest: far past any real body, far short of where decoding
# (a RecursionError) or encoding an event (orjson stops at 254) fails.
MAX_JSON_DEPTH = 64

# A JSON string (skipped whole: brackets in it are text) or a bracket.
_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks, as `request.stream()` gives them, up to its Content-Length."""
    declared = request.headers.get("content-length", "")
    remaining = int(declared) if declared.isdigit() else None
    if remaining == 0:
        return
    async with contextlib.aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            if chunk:
                yield chunk
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    return


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The whole body; 413 as soon as it is longer than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, what)
    body = bytearray()
    async for chunk in body_chunks(request):
        body += chunk
        if len(body) > limit:
            raise _too_large(limit, what)
    return bytes(body)


def _too_large(limit: int, what: str) -> ApiError:
    return ApiError(413, "Body too large", f"{what} are limited to {limit} bytes; send less")


def check_json_depth(raw: bytes, title: str, what: str) -> None:
    """422 when the JSON in `raw` nests arrays and objects more than MAX_JSON_DEPTH deep
    (checked before decoding: a few hundred levels made decoding or an event fail)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # it cannot nest deeper than it has brackets: most bodies end here
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(raw):
        match token.group():
            case b"[" | b"{":
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise ApiError(
                        422,
                        title,
                        f"{what} nests JSON more than {MAX_JSON_DEPTH} levels deep; "
                        "send flatter JSON",
                    )
            case b"]" | b"}":
                depth -= 1
