"""A blob written to S3 as its bytes arrive (`S3BlobStore.open_writer`), hashed as they
go, with its SHA-256 recorded on the object like every other write.

The hash is only known once the last byte has arrived, and S3 sets an object's
metadata when the write starts (a PUT, or the creation of a multipart upload), never
at its completion. So:

- A blob that fits two parts (`part_size`) is held until `commit` and sent in one PUT
  with its SHA-256 (most inputs: no second request; the two parts are what a multipart
  upload holds at most anyway, and one PUT spares it four requests and a server-side
  copy).
- A larger one goes up as a multipart upload to a temporary key, `.incoming/<random>`
  under the store's prefix: the two parts held are sent one after the other, then one
  part is being sent while the next fills (two parts in memory at most). `commit`
  completes it, then makes the object under its real key by a server-side copy that
  sets the SHA-256 (CopyObject; a multipart copy of `copy_part_size` ranges for objects
  over S3's 5 GiB CopyObject limit), and deletes the temporary object. Readers see
  the blob whole, with its hash, or not at all.
- `abort`, or any failure, aborts the multipart upload (no object ever appears) or
  deletes the completed temporary one. What a crash leaves behind is removed by the
  bucket's lifecycle rules (deploy/s3.md): incomplete multipart uploads, and objects
  under `.incoming/`. Listings never show `.incoming/`.

Not chosen: S3's own checksums (a multipart upload's SHA-256 is only a checksum of the
parts' checksums; S3 keeps a whole-object checksum of a multipart upload for CRCs only,
and moto 5.2.5 takes a wrong one without complaint), and the hash written beside the
object once it is complete (a sidecar or tags: the object would be visible without its
hash for a while, every reader would ask for it in a second request, and a replaced
blob would not change atomically). The copy costs S3 a server-side copy at the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from contextlib import suppress
from typing import Any, Final, Literal

from services.blobstore._s3_errors import S3Target, mapped
from services.blobstore.base import BlobError

__all__ = ["COPY_LIMIT", "INCOMING", "SHA256_META", "S3BlobWriter"]

INCOMING: Final = ".incoming/"  # temporary objects, under the store's prefix
COPY_LIMIT: Final = 5 * 1024**3  # S3's largest CopyObject source
_COPY_PARTS_AT_ONCE: Final = 4
SHA256_META: Final = "sha256"


class S3BlobWriter:
    """`write` the bytes in order, then `commit` (the blob appears under its key) or
    `abort` (nothing is left); `abort` is idempotent, and does nothing after `commit`.
    Made by `S3BlobStore.open_writer`; no request is sent before the first full part."""

    def __init__(
        self,
        s3: Any,
        *,
        bucket: str,
        key: str,
        s3_key: str,
        incoming_key: str,
        content_type: str,
        part_size: int,
        copy_limit: int,
        copy_part_size: int,
        target: S3Target,
    ) -> None:
        self.key = key
        self.size = 0
        self._s3 = s3
        self._bucket = bucket
        self._final = s3_key
        self._incoming = incoming_key
        self._content_type = content_type
        self._part_size = part_size
        self._copy_limit = copy_limit
        self._copy_part_size = copy_part_size
        self._target = target
        self._buffer = io.BytesIO()  # the body as it is sent: never copied
        self._held: io.BytesIO | None = None  # a first full part, while none is sent
        self._digest = hashlib.sha256()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._sending: asyncio.Future[None] | None = None
        self._completed = False  # the temporary object exists
        self._state: Literal["open", "committing", "committed", "aborted"] = "open"

    @staticmethod
    def incoming_key(prefix: str) -> str:
        return f"{prefix}{INCOMING}{uuid.uuid4().hex}"

    @property
    def done(self) -> bool:
        return self._state in ("committed", "aborted")

    async def write(self, data: bytes) -> None:
        """Add `data`; waits while a full part is ready and the one before it is still
        being sent."""
        self._check_open()
        view = memoryview(data)
        while view:
            if self._buffer.tell() >= self._part_size:  # full, and more is coming
                if self._upload_id is None and self._held is None:
                    self._held, self._buffer = self._buffer, io.BytesIO()
                else:
                    await self._ship()
            room = self._part_size - self._buffer.tell()
            self._buffer.write(view[:room])
            view = view[room:]
        self.size += len(data)

    async def commit(self, *, replace: bool = True) -> None:
        """Make the blob visible under its key, whole, with its SHA-256. `replace=False`:
        a conditional write (`If-None-Match: *`), which S3 refuses (412, here
        BlobExistsError) when the key holds an object, even one written meanwhile."""
        self._check_open()
        self._state = "committing"
        try:
            if self._upload_id is None:
                await self._put_whole(replace)
            else:
                if self._buffer.tell():
                    await self._ship()
                await self._wait_sent()
                await self._complete()
                await self._copy_in(replace)
        except BaseException:
            self._state = "open"
            await self.abort()
            raise
        self._state = "committed"
        with suppress(Exception):  # the lifecycle rule removes it if this fails
            await asyncio.shield(self._delete_incoming())

    async def abort(self) -> None:
        """Drop whatever was sent: nothing of this blob stays in the bucket."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._buffer = io.BytesIO()
        self._held = None
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.cancel()
            with suppress(BaseException):
                await sending
        with suppress(Exception):  # best effort: the lifecycle rules are the backstop
            await asyncio.shield(self._drop_incoming())

    def _check_open(self) -> None:
        if self._state != "open":
            raise BlobError(
                f"the blob {self.key!r} is no longer being written ({self._state})",
                hint="Open a new writer to write the blob again.",
            )

    async def _put_whole(self, replace: bool) -> None:
        buffers = [self._buffer] if self._held is None else [self._held, self._buffer]
        for buffer in buffers:
            await asyncio.to_thread(_hash, self._digest, buffer)
        body = self._buffer if self._held is None else _Joined(self._held, self._buffer)
        body.seek(0)
        condition = {} if replace else {"IfNoneMatch": "*"}
        async with mapped(self._target, exclusive=self.key):
            await self._s3.put_object(
                Bucket=self._bucket,
                Key=self._final,
                Body=body,
                ContentType=self._content_type,
                Metadata={SHA256_META: self._digest.hexdigest()},
                **condition,
            )

    async def _ship(self) -> None:
        """The buffer becomes the next part, sent once the one before it is (the part
        held, if any, is sent first, and waited for)."""
        part, self._buffer = self._buffer, io.BytesIO()
        part.seek(0)
        await self._wait_sent()
        if self._upload_id is None:
            async with mapped(self._target):
                started = await self._s3.create_multipart_upload(
                    Bucket=self._bucket, Key=self._incoming, ContentType=self._content_type
                )
            self._upload_id = str(started["UploadId"])
        if self._held is not None:
            held, self._held = self._held, None
            held.seek(0)
            await self._send(len(self._parts) + 1, held)
        self._sending = asyncio.ensure_future(self._send(len(self._parts) + 1, part))

    async def _wait_sent(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending

    async def _send(self, number: int, part: io.BytesIO) -> None:
        """Hashed (in a worker thread) while it is sent; both are done before the next
        part's turn, so the digest takes the parts in order."""
        hashing = asyncio.ensure_future(asyncio.to_thread(_hash, self._digest, part))
        try:
            async with mapped(self._target):
                sent = await self._s3.upload_part(
                    Bucket=self._bucket,
                    Key=self._incoming,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=part,
                )
        finally:
            await hashing
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    async def _complete(self) -> None:
        async with mapped(self._target):
            await self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._incoming,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._completed = True

    async def _copy_in(self, replace: bool) -> None:
        """The temporary object under the real key, with its SHA-256: one CopyObject,
        or ranges copied in parallel as a multipart upload past `copy_limit` (always
        when it may not `replace`: its completion takes `If-None-Match: *`)."""
        source = {"Bucket": self._bucket, "Key": self._incoming}
        metadata = {SHA256_META: self._digest.hexdigest()}
        if self.size <= self._copy_limit and replace:
            async with mapped(self._target):
                await self._s3.copy_object(
                    Bucket=self._bucket,
                    Key=self._final,
                    CopySource=source,
                    MetadataDirective="REPLACE",
                    Metadata=metadata,
                    ContentType=self._content_type,
                )
            return
        args = {"Bucket": self._bucket, "Key": self._final}
        async with mapped(self._target):
            started = await self._s3.create_multipart_upload(
                **args, Metadata=metadata, ContentType=self._content_type
            )
        upload_id = started["UploadId"]
        condition = {} if replace else {"IfNoneMatch": "*"}
        try:
            async with mapped(self._target, exclusive=self.key):
                parts = await self._copy_parts(args, upload_id, source)
                await self._s3.complete_multipart_upload(
                    **args, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
                )
        except BaseException:
            with suppress(Exception):
                await asyncio.shield(self._s3.abort_multipart_upload(**args, UploadId=upload_id))
            raise

    async def _copy_parts(
        self, args: dict[str, str], upload_id: str, source: dict[str, str]
    ) -> list[dict[str, Any]]:
        ranges = [
            (start, min(start + self._copy_part_size, self.size) - 1)
            for start in range(0, self.size, self._copy_part_size)
        ]
        turns = asyncio.Semaphore(_COPY_PARTS_AT_ONCE)

        async def copy(number: int, first: int, last: int) -> dict[str, Any]:
            async with turns:
                copied = await self._s3.upload_part_copy(
                    **args,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            return {"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": number}

        copies = [asyncio.ensure_future(copy(n, *span)) for n, span in enumerate(ranges, 1)]
        try:
            return list(await asyncio.gather(*copies))
        except BaseException:
            for task in copies:
                task.cancel()
            await asyncio.gather(*copies, return_exceptions=True)
            raise

    async def _drop_incoming(self) -> None:
        if self._completed:
            await self._delete_incoming()
        elif self._upload_id is not None:
            async with mapped(self._target):
                await self._s3.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._incoming, UploadId=self._upload_id
                )

    async def _delete_incoming(self) -> None:
        if self._completed:
            async with mapped(self._target):
                await self._s3.delete_object(Bucket=self._bucket, Key=self._incoming)
            self._completed = False


def _hash(digest: Any, buffer: io.BytesIO) -> None:
    """Add the buffer's bytes to `digest`, without copying them or moving its position
    (it may be read meanwhile: sent as a request's body)."""
    with buffer.getbuffer() as view:
        digest.update(view)


class _Joined(io.RawIOBase):
    """Two buffers read as one body (a PUT's), neither copied: readable and seekable,
    with a length, as botocore (its signature, its retries) and aiohttp read a body."""

    def __init__(self, *buffers: io.BytesIO) -> None:
        super().__init__()
        self._views = [buffer.getbuffer() for buffer in buffers]
        self._size = sum(len(view) for view in self._views)
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, out: Any) -> int:
        target = memoryview(out).cast("B")
        done, skip = 0, self._pos
        for view in self._views:
            if skip >= len(view):
                skip -= len(view)
                continue
            take = min(len(view) - skip, len(target) - done)
            target[done : done + take] = view[skip : skip + take]
            done, skip = done + take, 0
            if done == len(target):
                break
        self._pos += done
        return done

    def close(self) -> None:
        for view in self._views:
            view.release()
        self._views = []
        super().close()
