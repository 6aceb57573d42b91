"""A blob written to the `file` backend as its bytes arrive (`FileBlobStore.open_writer`):
into a file in the store's `tmp/` folder, which `commit` seals and renames into place
(`move_in`), so readers never see it partial. A blob that never outgrew the buffer is
written by `commit` at once (`put_bytes`: one call in a worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from services.blobstore.base import BlobError

__all__ = ["FileBlobWriter"]

MoveIn = Callable[[str, Path, str, bool], Awaitable[None]]  # key, path, type, replace
PutBytes = Callable[[str, bytes, str, bool], Awaitable[None]]
NewPath = Callable[[], Awaitable[Path]]


class FileBlobWriter:
    """Pieces are gathered up to `buffer_size` bytes, then written in a worker thread to
    a file named by `new_path` (asked only then: a small blob never needs one)."""

    def __init__(
        self,
        key: str,
        content_type: str,
        new_path: NewPath,
        *,
        move_in: MoveIn,
        put_bytes: PutBytes,
        buffer_size: int,
    ) -> None:
        self.key = key
        self.size = 0
        self._content_type = content_type
        self._new_path = new_path
        self._path: Path | None = None
        self._move_in = move_in
        self._put_bytes = put_bytes
        self._buffer_size = buffer_size
        self._buffer = bytearray()
        self._fh: BinaryIO | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    async def write(self, data: bytes) -> None:
        self._check_open()
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self._buffer_size:
            await self._flush()

    async def commit(self, *, replace: bool = True) -> None:
        self._check_open()
        if self._fh is None:  # all of it in the buffer
            self._done = True
            await self._put_bytes(self.key, bytes(self._buffer), self._content_type, replace)
            self._buffer = bytearray()
            return
        try:
            await self._flush()
            await self._close()
        except BaseException:
            await self.abort()
            raise
        self._done = True
        if self._path is None:  # set with `_fh`, which was open
            raise BlobError(f"the blob {self.key!r} has no file", hint="Write it again.")
        await self._move_in(self.key, self._path, self._content_type, replace)  # takes the file

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        await asyncio.shield(self._discard())

    def _check_open(self) -> None:
        if self._done:
            raise BlobError(
                f"the blob {self.key!r} is no longer being written",
                hint="Open a new writer to write the blob again.",
            )

    async def _flush(self) -> None:
        data, self._buffer = self._buffer, bytearray()
        if self._fh is None:
            self._path = await self._new_path()
            self._fh = await asyncio.to_thread(self._path.open, "xb")
        if data:
            await asyncio.to_thread(self._fh.write, data)

    async def _close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            await asyncio.to_thread(fh.close)

    async def _discard(self) -> None:
        await self._close()
        if self._path is not None:
            await asyncio.to_thread(self._path.unlink, True)
