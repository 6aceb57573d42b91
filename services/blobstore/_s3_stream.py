"""One S3 object's chunks, read from a GET's body and checked against the SHA-256 its
metadata records: the last read raises `BlobIntegrityError` on a mismatch (or when the
body is shorter or longer than announced) instead of ending."""

from __future__ import annotations

import hashlib
from typing import Any

from services.blobstore._s3_errors import S3Target, mapped
from services.blobstore.base import BlobIntegrityError

__all__ = ["S3BlobStream"]


class S3BlobStream:
    """Iterate it, then (or instead) `aclose()` it; `aclose` is idempotent."""

    def __init__(
        self,
        key: str,
        response: dict[str, Any],
        *,
        expected_sha256: str | None,
        chunk_size: int,
        target: S3Target,
    ) -> None:
        self.key = key
        self.size = int(response["ContentLength"])
        self.content_type = str(response.get("ContentType") or "application/octet-stream")
        self._body = response["Body"]
        self._expected = expected_sha256.lower() if expected_sha256 else None
        self._digest = hashlib.sha256()
        self._read = 0
        self._chunk = chunk_size
        self._target = target
        self._closed = False

    def __aiter__(self) -> S3BlobStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            async with mapped(self._target, self.key):
                chunk = bytes(await self._body.read(min(self._chunk, self.size - self._read)))
        except BaseException:
            await self.aclose()
            raise
        if chunk:
            self._digest.update(chunk)
            self._read += len(chunk)
            if self._read <= self.size:
                return chunk
        await self.aclose()
        self._verify()
        raise StopAsyncIteration

    def _verify(self) -> None:
        actual = self._digest.hexdigest()
        if self._read != self.size:
            raise BlobIntegrityError(self.key, f"{self.size} bytes", f"{self._read} bytes")
        if self._expected is not None and actual != self._expected:
            raise BlobIntegrityError(self.key, self._expected, actual)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._body.close()
