"""The `file` blob store backend: blobs under a local directory, signed URLs served by
the API itself (services/api/routes_blobs.py).

Layout under `root`: `blobs/<key>` holds the content, `tmp/` the files being written
(renamed into place, so readers never see a partial blob). The content type is an
extended attribute of the blob file (`user.clinai.content_type`); on a file system
without user xattrs it is a file `meta/<key>`, which is also read for blobs written
before the attribute was used. All blocking file I/O runs in worker threads.

Durability (a put returns only once the blob survives a crash): the temporary file is
written, its attribute set, and fsynced once (data and inode with its attribute
together); then renamed into place and the folder fsynced (and, when folders had to
be made, the folders holding them). A crash before the folder's fsync leaves either no
blob or the whole one, never a blob without its content type: the type travels with
the inode. In the `meta/` fallback the meta file is made durable (file and folder)
before the blob is renamed into place, so a visible blob always has its type.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import hashlib
import hmac
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import quote, urlencode

import msgspec

from services.blobstore._file_writer import FileBlobWriter
from services.blobstore.base import (
    MAX_EXPIRES_IN,
    BlobError,
    BlobExistsError,
    BlobKeyError,
    BlobNotFoundError,
    BlobSignatureExpiredError,
    BlobSignatureInvalidError,
    BlobUnavailableError,
    UploadTarget,
    validate_filename,
    validate_key,
    validate_prefix,
)

__all__ = ["SIGNED_URL_PATH", "FileBlobStore", "FileBlobStream"]

# Where the API serves the signed URLs: `SIGNED_URL_PATH` + the key (quoted).
SIGNED_URL_PATH = "/v1/blobs/"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_SIGNATURE_DOMAIN = "clinai-blob-v1"
_UPLOAD_SIGNATURE_DOMAIN = "clinai-blob-put-v1"
_T = TypeVar("_T")
_XATTR = "user.clinai.content_type"
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})


class _Meta(msgspec.Struct, frozen=True):
    content_type: str


class FileBlobStream:
    """One blob's chunks. The file is opened on the first read (so a stream that is
    never iterated holds no descriptor) and closed at the end or by `aclose()`."""

    def __init__(self, key: str, path: Path, size: int, content_type: str, chunk: int) -> None:
        self.key = key
        self.size = size
        self.content_type = content_type
        self._path = path
        self._chunk = chunk
        self._fh: BinaryIO | None = None
        self._left = size
        self._closed = False

    def __aiter__(self) -> FileBlobStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed or self._left <= 0:
            await self.aclose()
            raise StopAsyncIteration
        if self._fh is None:
            self._fh = await asyncio.to_thread(self._open)
        chunk = await asyncio.to_thread(self._fh.read, min(self._chunk, self._left))
        if not chunk:
            await self.aclose()
            raise BlobError(f"blob {self.key!r} shrank while it was read", hint="Retry.")
        self._left -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        self._closed = True
        fh, self._fh = self._fh, None
        if fh is not None:
            await asyncio.to_thread(fh.close)

    def _open(self) -> BinaryIO:
        fh = self._path.open("rb")
        if os.fstat(fh.fileno()).st_size != self.size:
            fh.close()
            raise BlobError(f"blob {self.key!r} was replaced while it was read", hint="Retry.")
        return fh


class FileBlobStore:
    """Blobs in a local directory. `signing_key` (32+ random bytes, the same for every
    API process) signs download URLs under `base_url`; `clock` is injectable for tests.
    The constructor does no I/O; folders are created on the first write."""

    def __init__(
        self,
        root: Path,
        base_url: str,
        signing_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        chunk_size: int = 1024 * 1024,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"FileBlobStore: base_url {base_url!r} must be an http(s) URL")
        if len(signing_key) < 32:
            raise ValueError("FileBlobStore: signing_key must hold at least 32 bytes")
        if chunk_size <= 0:
            raise ValueError("FileBlobStore: chunk_size must be positive")
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        self._signing_key = signing_key
        self._clock = clock
        self._chunk = chunk_size
        self._xattrs: bool | None = None  # whether the file system keeps user xattrs
        self._spool_made = False

    # -- writing -------------------------------------------------------------------

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        validate_key(key)
        await asyncio.to_thread(self._put, key, content_type, lambda out: _copy(path, out))

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        await asyncio.to_thread(self._put, key, content_type, lambda out: out.write(data))

    async def open_writer(self, key: str, content_type: str) -> FileBlobWriter:
        """Written to a file in `tmp/`, renamed into place by `commit`."""
        validate_key(key)
        return FileBlobWriter(
            key,
            content_type,
            self._spool_path,
            move_in=self._commit_file,
            put_bytes=self._commit_bytes,
            buffer_size=self._chunk,
        )

    async def _commit_bytes(self, key: str, data: bytes, content_type: str, replace: bool) -> None:
        """A writer's `put_bytes`; `replace=False`: BlobExistsError when `key` has a blob."""
        fill: Callable[[BinaryIO], object] = lambda out: out.write(data)  # noqa: E731
        await asyncio.to_thread(self._put, key, content_type, fill, replace=replace)

    async def _commit_file(self, key: str, path: Path, content_type: str, replace: bool) -> None:
        """A writer's `move_in`; `replace=False`: BlobExistsError when `key` has a blob."""
        await asyncio.to_thread(self._move_in, key, path, content_type, replace=replace)

    async def _spool_path(self) -> Path:
        """A new file's name in `spool_dir`: a writer's, once it outgrows its buffer."""
        return (await self.spool_dir()) / f"w-{uuid.uuid4().hex}"

    async def spool_dir(self) -> Path:
        """`tmp/` under the root: a file written there is renamed in by `move_in`."""
        tmp_dir = self.root / "tmp"
        if not self._spool_made:
            await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
            self._spool_made = True
        return tmp_dir

    async def move_in(self, key: str, path: Path, content_type: str) -> None:
        """Renamed into place from any folder on the root's file system (sealed where it
        is when it is in `spool_dir`), copied and removed from any other."""
        await asyncio.to_thread(self._move_in, key, path, content_type)

    def _move_in(self, key: str, path: Path, content_type: str, *, replace: bool = True) -> None:
        tmp_dir = self.root / "tmp"
        # A file received in `spool_dir` is sealed where it is; any other is renamed in.
        tmp = path if path.parent == tmp_dir else tmp_dir / uuid.uuid4().hex
        try:
            validate_key(key)
            try:
                if tmp is not path:
                    os.rename(path, tmp)
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.ENOENT):
                    raise
                if err.errno == errno.ENOENT and not path.exists():
                    raise  # the source is missing, not the tmp folder
                try:
                    self._put(key, content_type, lambda out: _copy(path, out), replace=replace)
                finally:
                    path.unlink(missing_ok=True)
                return
            fd = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
            try:
                self._seal(fd, content_type)
            finally:
                os.close(fd)
            self._place(key, tmp, content_type, replace=replace)
        except BaseException:
            # Placed, both names are gone: only a failure leaves a file to remove.
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise

    def _put(
        self,
        key: str,
        content_type: str,
        fill: Callable[[BinaryIO], object],
        *,
        replace: bool = True,
    ) -> None:
        tmp_dir = self.root / "tmp"
        try:
            tmp_blob = self._write_tmp(tmp_dir, fill, content_type)
        except FileNotFoundError:  # the first write: folders are made on demand
            tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp_blob = self._write_tmp(tmp_dir, fill, content_type)
        try:
            self._place(key, tmp_blob, content_type, replace=replace)
        except BaseException:
            tmp_blob.unlink(missing_ok=True)  # once placed, the name is gone: no unlink
            raise

    def _write_tmp(
        self, tmp_dir: Path, fill: Callable[[BinaryIO], object], content_type: str
    ) -> Path:
        tmp = tmp_dir / uuid.uuid4().hex
        try:
            with tmp.open("xb") as out:
                fill(out)
                out.flush()
                self._seal(out.fileno(), content_type)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _seal(self, fd: int, content_type: str) -> None:
        """Make a temporary blob's content (and its content type, when it is kept in an
        extended attribute) durable: one fsync of the file."""
        if self._xattrs is not False:
            try:
                os.setxattr(fd, _XATTR, content_type.encode())
                self._xattrs = True
            except OSError as err:
                if err.errno not in _NO_XATTRS:
                    raise
                self._xattrs = False
        os.fsync(fd)  # fsync, not fdatasync: the attribute is inode metadata

    def _place(self, key: str, tmp_blob: Path, content_type: str, *, replace: bool = True) -> None:
        """Rename a sealed temporary blob into place and make the rename durable; with
        `replace=False` it is linked into place instead, which fails (BlobExistsError)
        when a blob is there, even one placed at the same moment."""
        blob = self._blob_path(key)
        tmp_meta: Path | None = None
        if not replace and blob.is_file():  # before a `meta/` file would be replaced
            raise BlobExistsError(key)
        if not self._xattrs:  # a file system without user xattrs: a `meta/` file
            tmp_meta = self._write_tmp(
                tmp_blob.parent,
                lambda out: out.write(msgspec.json.encode(_Meta(content_type))),
                content_type,
            )
        try:
            try:
                if tmp_meta is not None:
                    meta = self._meta_path(key)
                    _replace(tmp_meta, meta)
                    _fsync_dir(meta.parent)
                made = _replace(tmp_blob, blob, replace=replace)
            except (NotADirectoryError, IsADirectoryError, FileExistsError) as err:
                if not replace and isinstance(err, FileExistsError) and blob.is_file():
                    raise BlobExistsError(key) from err
                raise BlobKeyError(key, "it clashes with an existing key's folder") from err
        finally:
            if tmp_meta is not None:
                tmp_meta.unlink(missing_ok=True)
        for folder in (blob.parent, *made):
            _fsync_dir(folder)

    # -- reading -------------------------------------------------------------------

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read_existing, key, Path.read_bytes)

    async def download_to(self, key: str, path: Path) -> None:
        def copy(src: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

        await asyncio.to_thread(self._read_existing, key, copy)

    async def materialize(self, key: str, path: Path) -> Path:
        """The stored file itself (`path` is not used): a job's input is hard-linked
        into its worker's folder, not copied."""
        stored = self._blob_path(validate_key(key))
        # One stat of a file written moments ago: cheaper inline than a thread hop.
        if not stored.is_file():
            raise BlobNotFoundError(key)
        return stored

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await asyncio.to_thread(self._blob_path(key).is_file)

    async def size(self, key: str) -> int:
        return await asyncio.to_thread(self._read_existing, key, lambda p: p.stat().st_size)

    async def content_type(self, key: str) -> str:
        """The content type given when the blob was written."""
        validate_key(key)
        return await asyncio.to_thread(self._content_type, key)

    async def list(self, prefix: str) -> builtins.list[str]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    async def list_older(self, prefix: str, before: float) -> builtins.list[str]:
        validate_prefix(prefix)

        def older() -> builtins.list[str]:
            found = []
            for key in self._list(prefix):
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    if self._blob_path(key).stat().st_mtime < before:
                        found.append(key)
            return found

        return await asyncio.to_thread(older)

    async def delete(self, key: str) -> None:
        validate_key(key)

        def remove() -> None:
            self._blob_path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def open_stream(self, key: str) -> FileBlobStream:
        validate_key(key)

        def stat() -> tuple[int, str]:
            return self._read_existing(key, lambda p: p.stat().st_size), self._content_type(key)

        size, content_type = await asyncio.to_thread(stat)
        return FileBlobStream(key, self._blob_path(key), size, content_type, self._chunk)

    async def check(self) -> None:
        """The root's `tmp/` folder exists (made on demand) and can be written."""
        try:
            tmp_dir = await self.spool_dir()
            writable = await asyncio.to_thread(os.access, tmp_dir, os.W_OK)
        except OSError as err:
            writable, problem = False, err.strerror or type(err).__name__
        else:
            problem = "it is not writable"
        if not writable:
            raise BlobUnavailableError(
                f"the blob folder {self.root}",
                "unreachable",
                problem,
                hint="Check CLINAI_BLOB_DIR (or CLINAI_DATA_DIR): the folder must be writable.",
            )

    async def close(self) -> None:
        """Nothing to release: the file backend holds no connection."""

    def _read_existing(self, key: str, read: Callable[[Path], _T]) -> _T:
        path = self._blob_path(validate_key(key))
        try:
            return read(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            raise BlobNotFoundError(key) from err

    def _content_type(self, key: str) -> str:
        with contextlib.suppress(OSError):
            return os.getxattr(self._blob_path(key), _XATTR).decode()
        try:
            return msgspec.json.decode(self._meta_path(key).read_bytes(), type=_Meta).content_type
        except (OSError, msgspec.DecodeError):
            return DEFAULT_CONTENT_TYPE

    def _list(self, prefix: str) -> builtins.list[str]:
        base = self.root / "blobs"
        start = base.joinpath(*prefix.split("/")[:-1])
        keys: builtins.list[str] = []
        for dirpath, _dirs, names in os.walk(start):
            rel = Path(dirpath).relative_to(base).as_posix()
            for name in names:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _blob_path(self, key: str) -> Path:
        return self.root.joinpath("blobs", *key.split("/"))

    def _meta_path(self, key: str) -> Path:
        return self.root.joinpath("meta", *key.split("/"))

    # -- signed URLs ---------------------------------------------------------------

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        validate_key(key)
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        if filename is not None:
            validate_filename(filename)
        expires = int(self._clock()) + expires_in
        query = {"expires": str(expires), "signature": self._sign(key, expires, filename)}
        if filename is not None:
            query["filename"] = filename
        return f"{self.base_url}{SIGNED_URL_PATH}{quote(key, safe='/')}?{urlencode(query)}"

    def verify_signed(
        self, key: str, expires: int, signature: str, filename: str | None = None
    ) -> None:
        """Raise `BlobSignatureInvalidError` unless `signature` was made by this store's
        key for exactly (key, expires, filename), then `BlobSignatureExpiredError` if
        the clock has reached `expires`."""
        expected = self._sign(key, expires, filename)
        if not _same_signature(expected, signature):
            raise BlobSignatureInvalidError(key)
        if self._clock() >= expires:
            raise BlobSignatureExpiredError(key, expires)

    async def upload_target(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget:
        """A signed PUT to the API (`SIGNED_URL_PATH` + the key), which streams the body
        to disk, refuses it past `max_bytes` and refuses a key that holds a blob."""
        validate_key(key)
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        expires = int(self._clock()) + expires_in
        query = {
            "expires": str(expires),
            "max_bytes": str(max_bytes),
            "content_type": content_type,
            "signature": self._sign_upload(key, expires, max_bytes, content_type),
        }
        url = f"{self.base_url}{SIGNED_URL_PATH}{quote(key, safe='/')}?{urlencode(query)}"
        return UploadTarget(
            url=url, method="PUT", headers={"Content-Type": content_type}, expires=expires
        )

    def verify_upload(
        self, key: str, expires: int, max_bytes: int, content_type: str, signature: str
    ) -> None:
        expected = self._sign_upload(key, expires, max_bytes, content_type)
        if not _same_signature(expected, signature):
            raise BlobSignatureInvalidError(key)
        if self._clock() >= expires:
            raise BlobSignatureExpiredError(key, expires)

    def _sign_upload(self, key: str, expires: int, max_bytes: int, content_type: str) -> str:
        message = msgspec.json.encode(
            [_UPLOAD_SIGNATURE_DOMAIN, key, expires, max_bytes, content_type]
        )
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def _sign(self, key: str, expires: int, filename: str | None) -> str:
        # A JSON array is an unambiguous encoding of the three fields.
        message = msgspec.json.encode([_SIGNATURE_DOMAIN, key, expires, filename])
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()


def _copy(src: Path, out: BinaryIO) -> None:
    with src.open("rb") as fh:
        shutil.copyfileobj(fh, out, 1024 * 1024)


def _replace(tmp: Path, target: Path, *, replace: bool = True) -> tuple[Path, ...]:
    """Rename `tmp` to `target`, making `target`'s folders only when they are missing
    (most puts go to an existing folder: no mkdir calls then). Returns the folders
    whose entries changed because a folder was made in them, deepest first. With
    `replace=False`: linked, then `tmp` removed (FileExistsError when `target` is)."""
    try:
        _rename(tmp, target, replace)
        return ()
    except FileNotFoundError:
        missing = [target.parent]
        while not missing[-1].parent.exists():
            missing.append(missing[-1].parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        _rename(tmp, target, replace)
        return tuple(folder.parent for folder in missing)


def _rename(tmp: Path, target: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, target)
    else:
        os.link(tmp, target)  # never replaces: FileExistsError
        os.unlink(tmp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_signature(expected: str, given: str) -> bool:
    """Compared in constant time, as bytes: a given signature may hold any text (the
    comparison of str takes ASCII only)."""
    return hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "surrogatepass"))
