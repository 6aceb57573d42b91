"""A command sent under an Idempotency-Key: what of a job's form the request digest
covers, and the commit of what the request streamed (a job's input, a version's
package), which never replaces a stored one (see `_request_digest`)."""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from services.api._deadline import CANCEL_AFTER
from services.api._key_lock import request_in_progress
from services.api._request_digest import HashingWriter
from services.api.uploads import ReceivedForm
from services.api.wiring import ApiServices
from services.blobstore import (
    BlobError,
    BlobExistsError,
    BlobStore,
    BlobUnavailableError,
    BlobWriter,
)
from services.domain.context import CommandContext

__all__ = ["commit_keyed", "form_fields", "form_files", "keep_taken", "open_keyed_writer"]


async def open_keyed_writer(
    svc: ApiServices, ctx: CommandContext, key: str, content_type: str
) -> BlobWriter:
    """A writer for a command's blob; under an Idempotency-Key it also takes the bytes'
    SHA-256 (`HashingWriter`), for the request digest and `commit_keyed`."""
    writer = await svc.blobs.open_writer(key, content_type)
    return writer if ctx.idempotency_key is None else HashingWriter(writer)


async def commit_keyed(
    svc: ApiServices, ctx: CommandContext, blob: BlobWriter, aggregate: str, resource_id: str
) -> bool:
    """Commit the blob of the command that makes `resource_id`. Under an
    Idempotency-Key it never replaces a stored one: a retry of the same request keeps
    it, a different request is refused (422) before anything is written. A blob already
    stored while the command is not in the log is another attempt's, still being made
    or dead before its append (its API process killed): holding the same bytes, it is
    taken as it is and this one is not committed (True: call `keep_taken` after the
    append); else 409. Of two commits at the same moment the second fails: then
    replayed, refused, taken or 409 the same way."""
    if ctx.idempotency_key is None:
        await blob.commit()
        return False
    if await svc.commands.replays(ctx, aggregate, resource_id):
        return False
    if await _holds_same_bytes(svc.blobs, blob):
        return True
    try:
        await blob.commit(replace=False)
    except BlobExistsError as err:  # another request under the key committed first
        if await svc.commands.replays(ctx, aggregate, resource_id):
            return False
        if await _holds_same_bytes(svc.blobs, blob):
            return False  # taken, though this one's bytes went with the refused commit
        raise request_in_progress() from err
    return False


async def keep_taken(blobs: BlobStore, blob: BlobWriter) -> None:
    """After the append of a command whose stored blob `commit_keyed` took: if that
    blob went meanwhile (the dead attempt's discard or the input sweep found no command
    in the log just before the append landed), commit this request's own bytes."""
    if not await blobs.exists(blob.key):
        await blob.commit()


async def _holds_same_bytes(blobs: BlobStore, blob: BlobWriter) -> bool:
    """Whether a blob is stored under `blob.key` with the bytes `blob` took (a keyed
    request's `HashingWriter`); not when it is gone or cannot be read whole."""
    if not isinstance(blob, HashingWriter):
        return False
    digest = hashlib.sha256()
    try:
        stream = await blobs.open_stream(blob.key)
        try:
            async for chunk in stream:
                digest.update(chunk)
        finally:
            await stream.aclose()
    except BlobUnavailableError:
        raise
    except BlobError:  # gone, corrupt, or replaced while read
        return False
    return digest.hexdigest() == blob.sha256


def form_fields(request: Request, form: ReceivedForm) -> dict[str, str | None]:
    """The text fields and the header that define a job sent as a form."""
    return {**form.fields, CANCEL_AFTER: request.headers.get(CANCEL_AFTER)}


def form_files(form: ReceivedForm) -> list[tuple[str, str, int, str]]:
    """Each file of a form whose writers took the files' SHA-256 (`HashingWriter`)."""
    return [
        (name, f.filename, f.size, f.blob.sha256 if isinstance(f.blob, HashingWriter) else "")
        for name, f in form.all_files
    ]
