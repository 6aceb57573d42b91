"""The digest of what a keyed command asks (method, path, its defining fields, each
file's name, size and SHA-256), recorded with the command's first event: a reused
Idempotency-Key replays the first answer for the same request and is refused (422) for a
different one (see `events.idempotency`). Nothing is computed without a key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson
from starlette.requests import Request

from services.blobstore import BlobWriter
from services.domain.context import CommandContext

__all__ = ["HashingWriter", "with_digest"]


class HashingWriter:
    """A `BlobWriter` that also takes the SHA-256 of the bytes it writes."""

    def __init__(self, writer: BlobWriter) -> None:
        self._writer = writer
        self._sha256 = hashlib.sha256()

    @property
    def key(self) -> str:
        return self._writer.key

    @property
    def size(self) -> int:
        return self._writer.size

    @property
    def done(self) -> bool:
        return self._writer.done

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    async def write(self, data: bytes) -> None:
        self._sha256.update(data)
        await self._writer.write(data)

    async def commit(self, *, replace: bool = True) -> None:
        await self._writer.commit(replace=replace)

    async def abort(self) -> None:
        await self._writer.abort()


def with_digest(
    ctx: CommandContext,
    request: Request,
    fields: Mapping[str, Any],
    files: Sequence[tuple[str, str, int, str]] = (),
) -> CommandContext:
    """`ctx` with the digest of the request: its method and path, the `fields` that
    define the command and `files` (field, filename, size, SHA-256). `ctx` as it is
    without an Idempotency-Key."""
    if ctx.idempotency_key is None:
        return ctx
    what = {
        "method": request.method,
        "path": request.url.path,
        "fields": fields,
        "files": [list(f) for f in files],
    }
    encoded = orjson.dumps(what, option=orjson.OPT_SORT_KEYS, default=msgspec.to_builtins)
    return msgspec.structs.replace(ctx, request_digest=hashlib.sha256(encoded).hexdigest())
