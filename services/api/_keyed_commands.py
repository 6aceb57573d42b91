"""A command sent under an Idempotency-Key: what of a job's form the request digest
covers, and the commit of what the request streamed (a job's input, a version's
package), which never replaces a stored one (see `_request_digest`)."""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from services.api._deadline import CANCEL_AFTER
from services.api._request_digest import HashingWriter
from services.api.problems import ApiError
from services.api.uploads import ReceivedForm
from services.api.wiring import ApiServices
from services.blobstore import (
    BlobExistsError,
    BlobIntegrityError,
    BlobNotFoundError,
    BlobStore,
    BlobWriter,
)
from services.domain.context import CommandContext

__all__ = ["commit_keyed", "form_fields", "form_files", "open_keyed_writer"]


async def open_keyed_writer(
    svc: ApiServices, ctx: CommandContext, key: str, content_type: str
) -> BlobWriter:
    """A writer for a command's blob; under an Idempotency-Key it also takes the bytes'
    SHA-256 (`HashingWriter`), for the request digest and `commit_keyed`."""
    writer = await svc.blobs.open_writer(key, content_type)
    return writer if ctx.idempotency_key is None else HashingWriter(writer)


async def commit_keyed(
    svc: ApiServices, ctx: CommandContext, blob: BlobWriter, aggregate: str, resource_id: str
) -> None:
    """Commit the blob of the command that makes `resource_id`. Under an
    Idempotency-Key it never replaces a stored one: a retry of the same request keeps
    it, a different request is refused (422) before anything is written, and of two at
    once the second's commit fails: then replayed, refused, or, while the command is not
    in the log, the stored blob is used as it is when it holds the same bytes (those of
    an attempt still being made, or of one that died before its append: a retry after an
    API process was killed), else 409."""
    if ctx.idempotency_key is None:
        await blob.commit()
        return
    if await svc.commands.replays(ctx, aggregate, resource_id):
        return
    try:
        await blob.commit(replace=False)
    except BlobExistsError as err:  # another request under the key committed first
        if await svc.commands.replays(ctx, aggregate, resource_id):
            return
        if isinstance(blob, HashingWriter) and blob.sha256 == await _sha256(svc.blobs, blob.key):
            return
        raise ApiError(
            409,
            "Request in progress",
            "another request with this Idempotency-Key is being processed; send this "
            "one again once that one is answered (or use a new key for a new request)",
        ) from err


async def _sha256(blobs: BlobStore, key: str) -> str | None:
    """The stored blob's SHA-256; None when it is gone or corrupt (no match, then)."""
    try:
        stream = await blobs.open_stream(key)
        digest = hashlib.sha256()
        try:
            async for chunk in stream:
                digest.update(chunk)
        finally:
            await stream.aclose()
    except (BlobNotFoundError, BlobIntegrityError):
        return None
    return digest.hexdigest()


def form_fields(request: Request, form: ReceivedForm) -> dict[str, str | None]:
    """The text fields and the header that define a job sent as a form."""
    return {**form.fields, CANCEL_AFTER: request.headers.get(CANCEL_AFTER)}


def form_files(form: ReceivedForm) -> list[tuple[str, str, int, str]]:
    """Each file of a form whose writers took the files' SHA-256 (`HashingWriter`)."""
    return [
        (name, f.filename, f.size, f.blob.sha256 if isinstance(f.blob, HashingWriter) else "")
        for name, f in form.all_files
    ]
