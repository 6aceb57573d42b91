"""Signed blob downloads (`GET /v1/blobs/{key}`) and direct uploads (`PUT`): the URLs a
store signs for the API to serve (the `file` backend's). The store checks the
signature; a download is streamed as an attachment, an upload streamed to disk. 403 for
a bad or expired signature, 404 when the blob to download is missing, 409 when the blob
to upload was already sent, 413 past the upload's size cap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.api._job_result import stream_body
from services.api.openapi_spec import Operation, Param, Reply
from services.api.problems import ApiError, joined_detail, problem_response
from services.api.request_body import body_chunks
from services.api.uploads import drain_small_body
from services.blobstore import (
    SIGNED_URL_PATH,
    BlobError,
    BlobKeyError,
    BlobNotFoundError,
    BlobStore,
)
from services.blobstore.base import (
    BlobSignatureError,
    BlobSignatureInvalidError,
    content_disposition,
)

__all__ = [
    "SIGNED_BLOB_ROUTE",
    "blob_routes",
    "operations",
    "signed_blob_endpoint",
    "signed_upload_endpoint",
]

SIGNED_BLOB_ROUTE = SIGNED_URL_PATH + "{key:path}"
_TITLES = {"invalid": "Invalid signature", "expired": "Signed URL expired"}


def blob_routes(store: BlobStore) -> list[Route]:
    return [
        Route(SIGNED_BLOB_ROUTE, signed_blob_endpoint(store), methods=["GET"]),
        Route(SIGNED_BLOB_ROUTE, signed_upload_endpoint(store), methods=["PUT"]),
    ]


def signed_blob_endpoint(store: BlobStore) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        key = str(request.path_params.get("key", ""))
        params = request.query_params
        filename = params.get("filename")
        try:
            store.verify_signed(key, int(params["expires"]), params["signature"], filename)
        except (KeyError, ValueError):  # a parameter is missing or not a number
            return _problem(BlobSignatureInvalidError(key), 403, _TITLES["invalid"])
        except BlobSignatureError as err:
            return _problem(err, 403, _TITLES[err.reason])
        try:
            stream = await store.open_stream(key)
        except (BlobNotFoundError, BlobKeyError) as err:  # a key no blob has, or can have
            return _problem(err, 404, "Blob not found")
        headers = {
            "Content-Length": str(stream.size),
            "Content-Disposition": content_disposition(filename or key.rsplit("/", 1)[-1]),
            "X-Content-Type-Options": "nosniff",
            # model outputs are user content: never let them run as our origin
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        }
        return StreamingResponse(
            stream_body(b"", stream, b""), headers=headers, media_type=stream.content_type
        )

    return endpoint


def signed_upload_endpoint(store: BlobStore) -> Callable[[Request], Awaitable[Response]]:
    """The body of a signed PUT (`BlobStore.upload_target`), streamed into the spool
    folder with its size cap, then moved into the store; one write per key."""

    async def endpoint(request: Request) -> Response:
        key = str(request.path_params.get("key", ""))
        params = request.query_params
        try:
            max_bytes = int(params["max_bytes"])
            content_type = params["content_type"]
            store.verify_upload(
                key, int(params["expires"]), max_bytes, content_type, params["signature"]
            )
        except (KeyError, ValueError):  # a parameter is missing or not a number
            return _upload_refused(BlobSignatureInvalidError(key))
        except BlobSignatureError as err:
            return _upload_refused(err)
        if await store.exists(key):
            await drain_small_body(request)
            raise ApiError(
                409,
                "Already uploaded",
                "these bytes were already sent; an upload takes one PUT: "
                "create a new upload with POST /v1/uploads to send other bytes",
            )
        path = (await store.spool_dir()) / f"put-{uuid.uuid4().hex}"
        try:
            await _receive(request, path, max_bytes)
            await store.move_in(key, path, content_type)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return Response(status_code=200)

    return endpoint


async def _receive(request: Request, path: Path, limit: int) -> None:
    """The body to `path`; 413 as soon as it is longer than `limit` bytes."""
    too_large = ApiError(
        413,
        "Upload too large",
        f"the upload is larger than the limit of {limit} bytes; "
        "send a smaller file or ask the operator to raise the limit",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    size = 0
    fh = await asyncio.to_thread(path.open, "xb")
    try:
        async for chunk in body_chunks(request):
            size += len(chunk)
            if size > limit:
                raise too_large
            await asyncio.to_thread(fh.write, chunk)
    finally:
        await asyncio.to_thread(fh.close)


def _upload_refused(err: BlobSignatureError) -> Response:
    detail = joined_detail(
        err.message,
        "use the upload URL exactly as POST /v1/uploads returned it, before it "
        "expires; or create a new upload with POST /v1/uploads",
    )
    return problem_response(403, _TITLES[err.reason], detail)


def _problem(err: BlobError, status: int, title: str) -> Response:
    return problem_response(status, title, joined_detail(err.message, err.hint))


_KEY = Param(name="key", where="path", required=True, description="the blob's key")
_SIGNATURE = Param(name="signature", required=True, description="as the URL was signed")
_EXPIRES = Param(name="expires", type=int, required=True, description="as the URL was signed")
_TAG = "blobs"
_SIGNED = "Authenticated by the URL's signature (no API key): use the URL as the API gave it."

operations = [
    Operation(
        method="GET",
        path=SIGNED_BLOB_ROUTE,
        name="download_blob",
        summary="Download a blob by a signed URL (an output, a result)",
        description=_SIGNED,
        tag=_TAG,
        params=(_KEY, _EXPIRES, _SIGNATURE, Param(name="filename", description="as signed")),
        public=True,
        problems=(403,),
        replies={
            200: Reply(
                description="The blob, as an attachment",
                media_type="application/octet-stream",
                schema={"type": "string", "format": "binary"},
            )
        },
    ),
    Operation(
        method="PUT",
        path=SIGNED_BLOB_ROUTE,
        name="upload_blob",
        summary="Send a direct upload's bytes to the URL POST /v1/uploads gave",
        description=_SIGNED,
        tag=_TAG,
        params=(
            _KEY,
            _EXPIRES,
            _SIGNATURE,
            Param(name="max_bytes", type=int, required=True, description="as signed"),
            Param(name="content_type", required=True, description="as signed"),
        ),
        public=True,
        problems=(403, 409, 413),
        replies={200: Reply(description="Stored")},
    ),
]
