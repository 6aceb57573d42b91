"""The `s3` blob store backend: blobs in an S3 bucket (AWS S3, MinIO or any
S3-compatible service), through aiobotocore.

- Keys are stored under `prefix` in `bucket`. Credentials come from the usual AWS
  sources (the environment, a profile, the instance role), resolved by botocore; they
  never appear in an error or a log line.
- Streaming both ways: a file is sent in one PUT up to `part_size`, else as a multipart
  upload, one part in memory at a time; a blob whose bytes are still arriving (an upload
  through the API) is sent as they come, by `open_writer` (`_s3_writer`: two parts in
  memory at most); a download is read and written in `chunk_size` pieces. No blob is
  ever held whole in memory (except by `put_bytes`/`get_bytes`, whose callers hold it
  anyway).
- Integrity: each object records the SHA-256 of its content in its metadata
  (`x-amz-meta-sha256`); every read checks it at the end and raises
  `BlobIntegrityError` on a mismatch (a file being downloaded is then never put in
  place). An object written by something else, without the metadata, is read unchecked.
- Signed links are S3 presigned GETs, made for `public_endpoint_url` when clients reach
  the storage elsewhere than the services do; `verify_signed` refuses every URL (the
  API serves none of this backend's blobs).
- Failures map to `BlobNotFoundError` (a missing key) and `BlobUnavailableError`
  (unreachable, no bucket, credentials refused): see `_s3_errors`.

The constructor does no I/O; the clients are made on first use.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from services.blobstore._s3_client import client_config, drop_small_expect, new_session
from services.blobstore._s3_errors import S3Target, error_code, mapped
from services.blobstore._s3_local import file_sha256, sha256, tmp_beside, write_new
from services.blobstore._s3_stream import S3BlobStream
from services.blobstore._s3_writer import COPY_LIMIT, INCOMING, SHA256_META, S3BlobWriter
from services.blobstore.base import (
    MAX_EXPIRES_IN,
    BlobNotFoundError,
    BlobSignatureInvalidError,
    UploadTarget,
    content_disposition,
    validate_filename,
    validate_key,
    validate_prefix,
)

__all__ = ["S3BlobStore"]

MIN_PART_SIZE: Final = 5 * 1024 * 1024  # S3's minimum for every part but the last
_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


class S3BlobStore:
    """Blobs in `bucket` under `prefix`. `spool` is a local folder for files being
    received before they are uploaded (`spool_dir`). `session` defaults to one that
    reads the usual AWS credential sources; tests pass one with their own. A request
    that fails for a transient reason is tried up to `max_attempts` times in all.
    `copy_limit` and `copy_part_size`: how `open_writer` copies a finished upload into
    place (one CopyObject up to the limit, else ranges of that size)."""

    def __init__(
        self,
        *,
        bucket: str,
        spool: Path,
        region: str = "us-east-1",
        prefix: str = "",
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        session: AioSession | None = None,
        part_size: int = 8 * 1024 * 1024,
        chunk_size: int = 1024 * 1024,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
        copy_limit: int = COPY_LIMIT,
        copy_part_size: int = 512 * 1024 * 1024,
    ) -> None:
        if not bucket:
            raise ValueError("S3BlobStore: bucket must not be empty (CLINAI_S3_BUCKET)")
        for name, url in (
            ("endpoint_url", endpoint_url),
            ("public_endpoint_url", public_endpoint_url),
        ):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"S3BlobStore: {name} {url!r} must be an http(s) URL")
        if prefix:
            validate_prefix(prefix if prefix.endswith("/") else prefix + "/")
        if max_attempts < 1:
            raise ValueError("S3BlobStore: max_attempts must be at least 1")
        if part_size < MIN_PART_SIZE or chunk_size <= 0:
            raise ValueError(f"S3BlobStore: part_size must be at least {MIN_PART_SIZE} bytes")
        if not MIN_PART_SIZE <= copy_part_size <= copy_limit <= COPY_LIMIT:
            raise ValueError(
                f"S3BlobStore: copy_part_size must be at least {MIN_PART_SIZE} bytes, "
                f"and at most copy_limit, itself at most {COPY_LIMIT}"
            )
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._spool = Path(spool)
        self._region = region
        self._endpoint = endpoint_url or None
        self._public_endpoint = public_endpoint_url or None
        self._session = session
        self._part_size = part_size
        self._chunk = chunk_size
        self._copy_limit = copy_limit
        self._copy_part_size = copy_part_size
        self._config = client_config(
            connect_timeout_s, read_timeout_s, max_attempts, path_style=bool(self._endpoint)
        )
        # `check` asks once, at once: a health probe must answer within its own deadline.
        self._probe_config = client_config(
            min(connect_timeout_s, 1.0),
            min(read_timeout_s, 2.0),
            1,
            path_style=bool(self._endpoint),
        )
        self._target = S3Target(self._endpoint, bucket)
        self._exit = AsyncExitStack()
        self._lock = asyncio.Lock()
        self._s3: Any = None
        self._presigner: Any = None
        self._prober: Any = None
        self._spool_made = False

    # -- clients -------------------------------------------------------------------

    async def _client(self) -> Any:
        if self._s3 is None:
            async with self._lock:
                if self._s3 is None:
                    self._s3 = await self._open(self._endpoint)
        return self._s3

    async def _presign_client(self) -> Any:
        if self._public_endpoint is None or self._public_endpoint == self._endpoint:
            return await self._client()
        if self._presigner is None:
            async with self._lock:
                if self._presigner is None:
                    self._presigner = await self._open(self._public_endpoint)
        return self._presigner

    async def _probe_client(self) -> Any:
        if self._prober is None:
            async with self._lock:
                if self._prober is None:
                    self._prober = await self._open(self._endpoint, self._probe_config)
        return self._prober

    async def _open(self, endpoint: str | None, config: AioConfig | None = None) -> Any:
        session = self._session or new_session()
        self._session = session
        context = session.create_client(
            "s3", region_name=self._region, endpoint_url=endpoint, config=config or self._config
        )
        client = await self._exit.enter_async_context(context)
        client.meta.events.register_last("before-call.s3", drop_small_expect)
        return client

    def _key(self, key: str) -> str:
        return self._prefix + key

    # -- writing -------------------------------------------------------------------

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        validate_key(key)
        await self._upload(key, path, content_type)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        await self._put_object(key, data, sha256(data), content_type)

    async def open_writer(self, key: str, content_type: str) -> S3BlobWriter:
        """Sent as it is written: see `_s3_writer` (no request before the first part)."""
        validate_key(key)
        return S3BlobWriter(
            await self._client(),
            bucket=self.bucket,
            key=key,
            s3_key=self._key(key),
            incoming_key=S3BlobWriter.incoming_key(self._prefix),
            content_type=content_type,
            part_size=self._part_size,
            copy_limit=self._copy_limit,
            copy_part_size=self._copy_part_size,
            target=self._target,
        )

    async def spool_dir(self) -> Path:
        """A local scratch folder: what is written there is uploaded by `move_in`."""
        if not self._spool_made:
            await asyncio.to_thread(self._spool.mkdir, parents=True, exist_ok=True)
            self._spool_made = True
        return self._spool

    async def move_in(self, key: str, path: Path, content_type: str) -> None:
        """Uploaded, then removed (whether or not the upload succeeded)."""
        try:
            validate_key(key)
            await self._upload(key, path, content_type)
        finally:
            await asyncio.to_thread(path.unlink, True)

    async def _upload(self, key: str, path: Path, content_type: str) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= self._part_size:  # one PUT: at most one part in memory
            data = await asyncio.to_thread(path.read_bytes)
            digest = await asyncio.to_thread(sha256, data)
            await self._put_object(key, data, digest, content_type)
            return
        digest = await asyncio.to_thread(file_sha256, path, self._chunk)
        s3 = await self._client()
        args = {"Bucket": self.bucket, "Key": self._key(key)}
        async with mapped(self._target):
            started = await s3.create_multipart_upload(
                **args, ContentType=content_type, Metadata={SHA256_META: digest}
            )
        upload_id = started["UploadId"]
        try:
            async with mapped(self._target):
                parts = await self._send_parts(s3, args, upload_id, path)
                await s3.complete_multipart_upload(
                    **args, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            with suppress(Exception):  # the server also expires abandoned uploads
                await asyncio.shield(s3.abort_multipart_upload(**args, UploadId=upload_id))
            raise

    async def _send_parts(
        self, s3: Any, args: dict[str, str], upload_id: str, path: Path
    ) -> list[dict[str, Any]]:
        """Each part read while the one before it is being sent: two in memory at most."""
        parts: list[dict[str, Any]] = []
        fh = await asyncio.to_thread(path.open, "rb")
        try:
            number = 1
            data = await asyncio.to_thread(fh.read, self._part_size)
            while data:
                sending = asyncio.ensure_future(
                    s3.upload_part(**args, UploadId=upload_id, PartNumber=number, Body=data)
                )
                try:
                    following = await asyncio.to_thread(fh.read, self._part_size)
                finally:
                    sent = await sending
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
                number, data = number + 1, following
        finally:
            await asyncio.to_thread(fh.close)
        return parts

    async def _put_object(self, key: str, data: bytes, digest: str, content_type: str) -> None:
        s3 = await self._client()
        async with mapped(self._target):
            await s3.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=content_type,
                Metadata={SHA256_META: digest},
            )

    # -- reading -------------------------------------------------------------------

    async def open_stream(self, key: str) -> S3BlobStream:
        validate_key(key)
        s3 = await self._client()
        async with mapped(self._target, key):
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
        return S3BlobStream(
            key,
            response,
            expected_sha256=response.get("Metadata", {}).get(SHA256_META),
            chunk_size=self._chunk,
            target=self._target,
        )

    async def get_bytes(self, key: str) -> bytes:
        stream = await self.open_stream(key)
        return b"".join([chunk async for chunk in stream])

    async def download_to(self, key: str, path: Path) -> None:
        """Streamed into a temporary file beside `path`, checked, then renamed (a blob
        of one chunk is read first, then written by one call in a worker thread)."""
        stream = await self.open_stream(key)
        if stream.size <= self._chunk:
            data = b"".join([chunk async for chunk in stream])
            await asyncio.to_thread(write_new, path, data)
            return
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        tmp = tmp_beside(path)
        try:
            fh = await asyncio.to_thread(tmp.open, "xb")
            try:
                async for chunk in stream:
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                await asyncio.to_thread(fh.close)
            await asyncio.to_thread(os.replace, tmp, path)
        finally:
            await stream.aclose()
            await asyncio.to_thread(tmp.unlink, True)

    async def materialize(self, key: str, path: Path) -> Path:
        """Downloaded to `path` (the blob is not on this host)."""
        await self.download_to(key, path)
        return path

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except BlobNotFoundError:
            return False
        return True

    async def size(self, key: str) -> int:
        validate_key(key)
        s3 = await self._client()
        async with mapped(self._target):
            try:
                head = await s3.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as err:
                if error_code(err) not in _MISSING:
                    raise
                missing = err
            else:
                return int(head["ContentLength"])
        await self.check()  # a HEAD says 404 for a missing bucket too: tell them apart
        raise BlobNotFoundError(key) from missing

    async def list(self, prefix: str) -> builtins.list[str]:
        return [key for key, _ in await self._list(prefix)]

    async def list_older(self, prefix: str, before: float) -> builtins.list[str]:
        return [key for key, written in await self._list(prefix) if written < before]

    async def _list(self, prefix: str) -> builtins.list[tuple[str, float]]:
        validate_prefix(prefix)
        s3 = await self._client()
        found: builtins.list[tuple[str, float]] = []
        async with mapped(self._target):
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            async for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[len(self._prefix) :]
                    if key.startswith(INCOMING):  # uploads not yet in place
                        continue
                    found.append((key, item["LastModified"].timestamp()))
        return sorted(found)

    async def delete(self, key: str) -> None:
        validate_key(key)
        s3 = await self._client()
        async with mapped(self._target):
            await s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    # -- signed URLs ---------------------------------------------------------------

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """An S3 presigned GET (for the public endpoint when one is set), served as an
        attachment named `filename` (or the key's last segment)."""
        validate_key(key)
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        if filename is not None:
            validate_filename(filename)
        presigner = await self._presign_client()
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentDisposition": content_disposition(filename or key.rsplit("/", 1)[-1]),
        }
        async with mapped(self._target):
            url = await presigner.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in
            )
        return str(url)

    def verify_signed(
        self, key: str, expires: int, signature: str, filename: str | None = None
    ) -> None:
        """Refused: this backend's links are S3's own, never served by the API."""
        raise BlobSignatureInvalidError(key)

    async def upload_target(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget:
        """An S3 presigned PUT (for the public endpoint when one is set). S3 cannot cap
        a presigned PUT's size: the API checks the stored size before using the blob.
        Such an object carries no recorded SHA-256 (a client's PUT cannot set it)."""
        validate_key(key)
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        presigner = await self._presign_client()
        # If-None-Match: * is signed: S3 refuses a second PUT (412), so the bytes a job
        # was given cannot be replaced under it.
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ContentType": content_type,
            "IfNoneMatch": "*",
        }
        async with mapped(self._target):
            url = await presigner.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_in
            )
        return UploadTarget(
            url=str(url),
            method="PUT",
            headers={"Content-Type": content_type, "If-None-Match": "*"},
            expires=int(time.time()) + expires_in,
        )

    def verify_upload(
        self, key: str, expires: int, max_bytes: int, content_type: str, signature: str
    ) -> None:
        """Refused: uploads go to S3 itself, never through the API."""
        raise BlobSignatureInvalidError(key)

    # -- health --------------------------------------------------------------------

    async def check(self) -> None:
        """One HEAD of the bucket, not retried: it exists, answers, and takes the
        credentials."""
        s3 = await self._probe_client()
        async with mapped(self._target):
            try:
                await s3.head_bucket(Bucket=self.bucket)
            except ClientError as err:
                if error_code(err) in _MISSING:  # a HEAD has no body to name the error
                    raise self._target.unavailable(err, code="NoSuchBucket") from err
                raise

    async def close(self) -> None:
        await self._exit.aclose()
        self._s3 = self._presigner = self._prober = None
