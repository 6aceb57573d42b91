"""Direct uploads: `POST /v1/uploads` gives an upload id and where to send the bytes
(`BlobStore.upload_target`: a presigned PUT to S3, a signed PUT to the API on the
`file` backend); `POST /v1/jobs` then names the id as its input.

An upload is two blobs: `uploads/<id>/meta.json` (who made it, when, the file's name
and type), written here, and `uploads/<id>/data`, the bytes the client sends. Its job
id is derived from its id (`upload_job_id`), so a second job on one upload is refused
by the log itself (the job already exists), and the sweep keeps the uploads whose job
exists and removes the others once `upload_ttl_s` old (`InputSweep`).
"""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events import IdempotencyKeyReusedError
from services.api import replies
from services.api.openapi_spec import Operation, Reply
from services.api.problems import ApiError
from services.api.uploads import safe_filename
from services.api.wiring import (
    ApiServices,
    checked_id,
    decode_body,
    json_response,
    services,
    text_param,
)
from services.blobstore import BlobNotFoundError
from services.blobstore.base import MAX_EXPIRES_IN
from services.domain.access import can_use_upload

__all__ = [
    "SWEEP_GRACE_S",
    "UPLOAD_PREFIX",
    "ClaimedUpload",
    "claim_upload",
    "operations",
    "routes",
    "upload_job_id",
    "upload_job_of_key",
    "upload_used",
]

UPLOAD_PREFIX = "uploads/"
# The sweep removes an unused upload this long after it expired, so that a job that
# claimed it just before is in the log by then (the sweep keeps the uploads of jobs).
SWEEP_GRACE_S = 300.0
_ID_PREFIX = "upload_"
_NEW_UPLOAD = "create a new upload with POST /v1/uploads and send its bytes"


class _Meta(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    filename: str
    content_type: str
    created_at: float


class NewUploadBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    filename: str = "upload"
    content_type: str = "application/octet-stream"


class ClaimedUpload(msgspec.Struct, frozen=True, kw_only=True):
    """An upload whose bytes arrived, checked for a job: its input key, name and size."""

    job_id: str
    key: str
    filename: str
    size: int


def upload_job_id(upload_id: str) -> str:
    """The one job an upload may feed."""
    return "job_" + upload_id.removeprefix(_ID_PREFIX)


def upload_job_of_key(key: str) -> str:
    """The job that the upload holding `key` (under `uploads/`) may feed."""
    return upload_job_id(key[len(UPLOAD_PREFIX) :].split("/", 1)[0])


async def _replays(svc: ApiServices, upload_id: str, meta: _Meta) -> bool:
    """Whether the upload (its id derived from an Idempotency-Key) was made by this same
    request: it then keeps its record; IdempotencyKeyReusedError for another request."""
    try:
        stored = msgspec.json.decode(await svc.blobs.get_bytes(_meta_key(upload_id)), type=_Meta)
    except BlobNotFoundError:
        return False
    if (stored.owner, stored.filename, stored.content_type) != (
        meta.owner,
        meta.filename,
        meta.content_type,
    ):
        raise IdempotencyKeyReusedError("upload", upload_id)
    return True


def _meta_key(upload_id: str) -> str:
    return f"{UPLOAD_PREFIX}{upload_id}/meta.json"


def _data_key(upload_id: str) -> str:
    return f"{UPLOAD_PREFIX}{upload_id}/data"


async def create_upload(request: Request) -> Response:
    """Body (optional JSON): `filename`, `content_type` of the file to be sent."""
    svc = services(request)
    caller = await svc.caller(request)
    wanted = await decode_body(request, NewUploadBody)
    filename = safe_filename(text_param(wanted.filename, "filename") or "", "upload")
    content_type = text_param(wanted.content_type, "content_type") or ""
    if not content_type or len(content_type) > 200 or not content_type.isprintable():
        raise ApiError(
            422, "Invalid content_type", "content_type is a media type such as image/png"
        )
    ctx = svc.context(request, caller)
    upload_id = ctx.resource_id("upload")
    ttl = min(int(svc.settings.upload_ttl_s), MAX_EXPIRES_IN)
    meta = _Meta(
        owner=caller.user_id, filename=filename, content_type=content_type, created_at=time.time()
    )
    if ctx.idempotency_key is None or not await _replays(svc, upload_id, meta):
        await svc.blobs.put_bytes(
            _meta_key(upload_id), msgspec.json.encode(meta), "application/json"
        )
    max_bytes = svc.settings.max_input_bytes
    target = await svc.blobs.upload_target(
        _data_key(upload_id), content_type=content_type, max_bytes=max_bytes, expires_in=ttl
    )
    return json_response(
        replies.CreatedUpload(
            id=upload_id,
            url=target.url,
            method=target.method,
            headers=target.headers,
            expires_at=target.expires,
            max_bytes=max_bytes,
            filename=filename,
        ),
        201,
    )


async def claim_upload(svc: ApiServices, owner: str, upload_id: str) -> ClaimedUpload:
    """The caller's upload, checked for a job: 404 for a missing one or another's, 410
    once expired, 409 while its bytes have not arrived, 413 when they are too many.
    (That it feeds one job only, the job's append decides: see `upload_job_id`.)"""
    checked_id(upload_id, "upload")
    if not upload_id.startswith(_ID_PREFIX):
        raise ApiError(422, "Invalid input", f"'input' is an upload id ({_ID_PREFIX}...)")
    try:
        meta = msgspec.json.decode(await svc.blobs.get_bytes(_meta_key(upload_id)), type=_Meta)
    except BlobNotFoundError:
        meta = None
    if meta is None or not can_use_upload(meta.owner, owner):
        raise ApiError(
            404,
            "Upload not found",
            f"upload {upload_id} not found (or removed after it expired); {_NEW_UPLOAD}",
        )
    ttl = svc.settings.upload_ttl_s
    if time.time() - meta.created_at >= ttl:
        raise ApiError(
            410, "Upload expired", f"upload {upload_id} expired ({ttl:.0f} s); {_NEW_UPLOAD}"
        )
    key = _data_key(upload_id)
    try:
        size = await svc.blobs.size(key)
    except BlobNotFoundError as err:
        raise ApiError(
            409,
            "Upload incomplete",
            f"the bytes of upload {upload_id} have not arrived: send them to the upload's "
            "URL (the 'url', 'method' and 'headers' POST /v1/uploads returned), then "
            "submit the job",
        ) from err
    limit = svc.settings.max_input_bytes
    if size > limit:
        raise ApiError(
            413,
            "File too large",
            f"upload {upload_id} holds {size} bytes, more than the input limit of {limit}; "
            "send a smaller file or ask the operator to raise the limit",
        )
    return ClaimedUpload(
        job_id=upload_job_id(upload_id), key=key, filename=meta.filename, size=size
    )


def upload_used(upload_id: str) -> ApiError:
    """The answer when the job an upload feeds already exists."""
    return ApiError(
        409, "Upload already used", f"upload {upload_id} already fed a job; {_NEW_UPLOAD}"
    )


routes = [Route("/v1/uploads", create_upload, methods=["POST"])]

operations = [
    Operation(
        method="POST",
        path="/v1/uploads",
        name="create_upload",
        summary="Start a direct upload: where to send a job's input file",
        tag="jobs",
        body=NewUploadBody,
        body_required=False,
        command=True,
        replies={201: Reply(description="Send the bytes there", type=replies.CreatedUpload)},
    ),
]
