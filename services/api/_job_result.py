"""Answering with one job, its result inline: a result kept as a blob (too large for an
event) is streamed from the blob store into the JSON body, never held whole in memory;
and the result alone (`GET /v1/jobs/{id}/result`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson
from starlette.responses import Response, StreamingResponse

from projections import queries
from services.api.problems import ApiError
from services.api.wiring import SEQ_HEADER, json_response
from services.blobstore import BlobNotFoundError, BlobStore, BlobStream
from services.domain.views import job_view

__all__ = ["job_response", "result_response", "stream_body"]

log = logging.getLogger("clinai.api")

_NO_STORE = {"Cache-Control": "private, no-store"}


async def job_response(
    job: queries.JobView, blobs: BlobStore, status: int = 200, *, seq: int | None = None
) -> Response:
    """The job as `GET /v1/jobs/{id}` shows it, with its result inline."""
    view = await job_view(job, blobs)
    stream = await _open_result(job, blobs)
    if stream is None:
        return json_response(view, status, seq=seq)
    if seq is not None:
        view.seq = seq
    fields = msgspec.to_builtins(view)
    del fields["result"]
    head = orjson.dumps(fields)
    prefix = head[:-1] + b',"result":'  # the object without its closing brace
    headers = {"Content-Length": str(len(prefix) + stream.size + 1)}
    if seq is not None:
        headers[SEQ_HEADER] = str(seq)
    return StreamingResponse(
        stream_body(prefix, stream, b"}"), status, headers=headers, media_type="application/json"
    )


async def result_response(job: queries.JobView, blobs: BlobStore) -> Response:
    """The result alone, as JSON; 409 while the job has none."""
    if job.status != "succeeded":
        raise ApiError(409, "No result", _why_no_result(job))
    stream = await _open_result(job, blobs)
    if stream is None:
        if job.result_blob is not None:
            raise ApiError(
                404, "Result missing", f"the result of job {job.id} is missing from the blob store"
            )
        return Response(
            orjson.dumps(job.result or {}), media_type="application/json", headers=_NO_STORE
        )
    headers = {"Content-Length": str(stream.size), **_NO_STORE}
    return StreamingResponse(
        stream_body(b"", stream, b""), headers=headers, media_type="application/json"
    )


async def _open_result(job: queries.JobView, blobs: BlobStore) -> BlobStream | None:
    """The stored result's stream, or None when the result is inline (or missing)."""
    ref: dict[str, Any] | None = job.result_blob
    if ref is None:
        return None
    try:
        return await blobs.open_stream(ref["key"])
    except BlobNotFoundError:
        log.warning("job %s: its result %s is missing from the blob store", job.id, ref)
        return None


async def stream_body(prefix: bytes, stream: BlobStream, suffix: bytes) -> AsyncIterator[bytes]:
    """The chunks of `stream` between `prefix` and `suffix`; the stream is closed at
    the end, or when the response is abandoned."""
    try:
        if prefix:
            yield prefix
        async for chunk in stream:
            yield chunk
        if suffix:
            yield suffix
    finally:
        await stream.aclose()


def _why_no_result(job: queries.JobView) -> str:
    if job.status in ("queued", "running"):
        return (
            f"job {job.id} is {job.status}: wait until it has succeeded "
            f"(GET /v1/jobs/{job.id}?wait=30), then ask again"
        )
    return (
        f"job {job.id} {job.status} and has no result; GET /v1/jobs/{job.id} says why "
        "(error_kind, error_message)"
    )
