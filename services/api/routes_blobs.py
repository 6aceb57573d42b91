"""Signed blob downloads (`GET /v1/blobs/{key}`): the URLs a store signs for the API to
serve (the `file` backend's). The store checks the signature; the blob is streamed as
an attachment. 403 for a bad or expired signature, 404 when the blob is missing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from services.api._job_result import stream_body
from services.api.problems import joined_detail, problem_response
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

__all__ = ["SIGNED_BLOB_ROUTE", "blob_routes", "signed_blob_endpoint"]

SIGNED_BLOB_ROUTE = SIGNED_URL_PATH + "{key:path}"
_TITLES = {"invalid": "Invalid signature", "expired": "Signed URL expired"}


def blob_routes(store: BlobStore) -> list[Route]:
    return [Route(SIGNED_BLOB_ROUTE, signed_blob_endpoint(store), methods=["GET"])]


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


def _problem(err: BlobError, status: int, title: str) -> Response:
    return problem_response(status, title, joined_detail(err.message, err.hint))
