"""The blob store port: what every backend (file, s3) provides, its typed errors, and
the key rules shared by all backends.

Keys are '/'-separated relative paths such as `packages/<version>/package.zip`,
`inputs/<job>/<name>`, `outputs/<job>/<name>`, `results/<job>/<what>-<sha256>.json` (a
result or outputs list too large for an event), `logs/...`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote

import msgspec

from events import ClinaiError

__all__ = [
    "MAX_EXPIRES_IN",
    "BlobError",
    "BlobExistsError",
    "BlobIntegrityError",
    "BlobKeyError",
    "BlobNotFoundError",
    "BlobSignatureError",
    "BlobSignatureExpiredError",
    "BlobSignatureInvalidError",
    "BlobStore",
    "BlobStream",
    "BlobUnavailableError",
    "BlobWriter",
    "UploadTarget",
    "content_disposition",
    "validate_filename",
    "validate_key",
    "validate_prefix",
]

MAX_KEY_BYTES = 1024  # S3's limit
MAX_EXPIRES_IN = 7 * 24 * 3600  # the S3 presigned URL limit, so both backends agree
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BlobError(ClinaiError):
    """Base of the blob store errors; `hint` says what the caller can do next."""


class BlobKeyError(BlobError, ValueError):
    """The key (or prefix) breaks the key rules; `key` holds it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(
            f"invalid blob key {key!r}: {problem}",
            hint="Use a relative '/'-separated key such as 'outputs/<job>/<name>' "
            "without '..', empty segments or a leading '/'.",
        )
        self.key = key
        self.problem = problem


class BlobNotFoundError(BlobError):
    """No blob is stored under `key`."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"no blob stored under {key!r}",
            hint="Check the key; the blob may not have been written yet.",
        )
        self.key = key


class BlobExistsError(BlobError):
    """A commit that may not replace (`BlobWriter.commit(replace=False)`) found a blob
    under `key`: that blob is left as it was."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"a blob is already stored under {key!r}",
            hint="Write to another key, or read the stored blob.",
        )
        self.key = key


class BlobUnavailableError(BlobError):
    """The store cannot be used now: unreachable, its bucket missing, or the credentials
    refused. `what` names the store (never a credential); `reason` tells the cases
    apart. An outage: a command answers 503, a job's attempt is retried."""

    def __init__(
        self,
        what: str,
        reason: Literal["unreachable", "no_bucket", "credentials"],
        problem: str,
        *,
        hint: str,
    ) -> None:
        super().__init__(f"{what}: {problem}", hint=hint)
        self.what = what
        self.reason = reason


class BlobIntegrityError(BlobError):
    """A blob's content does not match the SHA-256 recorded when it was written: it was
    corrupted or replaced in the store. Never served, never handed on."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(
            f"blob {key!r} is corrupt: it was written as {expected} (SHA-256 or size), "
            f"but {actual} was read",
            hint="Write the blob again (submit the job or upload the package again); check "
            "the storage for faults if it recurs.",
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class BlobSignatureError(BlobError):
    """A signed URL was refused; `reason` tells the two cases apart."""

    reason: Literal["expired", "invalid"]


class BlobSignatureExpiredError(BlobSignatureError):
    reason = "expired"

    def __init__(self, key: str, expires: int) -> None:
        super().__init__(
            f"the signed URL for {key!r} expired at {expires}",
            hint="Request a fresh download URL from the API.",
        )
        self.key = key
        self.expires = expires


class BlobSignatureInvalidError(BlobSignatureError):
    reason = "invalid"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"the signature of the URL for {key!r} is missing or does not match",
            hint="Use the URL exactly as the API returned it, without changing any part.",
        )
        self.key = key


class UploadTarget(msgspec.Struct, frozen=True, kw_only=True):
    """Where a client sends an upload's bytes itself: one `method` request (a PUT) to
    `url` with `headers` (exactly these; the signature may cover them) and the bytes as
    the body, before `expires` (seconds since the epoch)."""

    url: str
    method: str = "PUT"
    headers: dict[str, str] = {}
    expires: int


class BlobStream(Protocol):
    """The chunks of one blob, opened by `BlobStore.open_stream`. Iterate it, then (or
    instead) `aclose()` it; `aclose` is idempotent."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class BlobWriter(Protocol):
    """A blob written as its bytes arrive, opened by `BlobStore.open_writer`: `write`
    the pieces in order, then `commit`, or `abort`. Nothing is visible under the key
    before `commit` returns, and then the whole blob is (replacing any earlier one
    atomically). `abort` leaves nothing behind; it is idempotent and does nothing after
    `commit`. After a failed `write` or `commit`, `abort` (nothing else) still works.
    `commit(replace=False)` never replaces a stored blob: when one is there (even one
    committed at the same moment by another writer) it raises `BlobExistsError` and the
    stored blob stays as it was."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int:
        """The bytes written so far."""
        ...

    @property
    def done(self) -> bool:
        """Committed or aborted: `abort` has nothing left to do."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def commit(self, *, replace: bool = True) -> None: ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """The port. Every method validates the key (`BlobKeyError`); reads of a missing
    key raise `BlobNotFoundError`. A put replaces the blob atomically: readers see the
    old or the new content, never a mix. Constructors do no I/O; `close()` releases
    whatever the backend opened."""

    async def put_file(self, key: str, path: Path, content_type: str) -> None: ...

    async def spool_dir(self) -> Path:
        """An existing local folder where a caller writes a file it will hand to
        `move_in` (an upload being received, a job's output copies). A backend that
        keeps blobs on this host's disk gives a folder on that file system, so that
        `move_in` is a rename; any other gives a local scratch folder."""
        ...

    async def move_in(self, key: str, path: Path, content_type: str) -> None:
        """`put_file`, taking the local file over: renamed into place when the store
        keeps blobs on the same file system, else copied or uploaded, then removed.
        `path` is gone afterwards, whether or not this succeeded."""
        ...

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    async def open_writer(self, key: str, content_type: str) -> BlobWriter:
        """A writer for the blob `key`, for bytes that arrive over time (an upload being
        received): they go to storage as they come, with bounded memory."""
        ...

    async def get_bytes(self, key: str) -> bytes: ...

    async def download_to(self, key: str, path: Path) -> None:
        """Write the blob to `path` (atomically; parent folders are created)."""
        ...

    async def materialize(self, key: str, path: Path) -> Path:
        """The blob as a file on this host, for a reader that only reads it (a job's
        input, which the runtime links or copies into the worker's folder). A backend
        that keeps the blob on this host returns the stored file itself (never write to
        it, never remove it); any other downloads it to `path` (as `download_to`) and
        returns `path`, which is then the caller's to remove."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int: ...

    async def list(self, prefix: str) -> builtins.list[str]:
        """Every key that starts with `prefix` (a plain string prefix, as in S3; ''
        lists everything), sorted."""
        ...

    async def list_older(self, prefix: str, before: float) -> builtins.list[str]:
        """Like `list`, only the blobs last written before `before` (seconds since the
        epoch), for sweeps of what was left behind."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing one is no error (deletes may be repeated)."""
        ...

    async def open_stream(self, key: str) -> BlobStream:
        """Open the blob for streaming; raises `BlobNotFoundError` here, before the
        first chunk, so that a server can still answer 404."""
        ...

    async def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL that lets anyone holding it download the blob for `expires_in`
        seconds, served with `filename` as the download name when given."""
        ...

    def verify_signed(
        self, key: str, expires: int, signature: str, filename: str | None = None
    ) -> None:
        """Check a signed URL's parameters before the API serves the blob: raise
        `BlobSignatureInvalidError` unless this store signed exactly (key, expires,
        filename), then `BlobSignatureExpiredError` once `expires` has passed. A backend
        whose URLs point elsewhere (S3 presigns its own) refuses every one as invalid."""
        ...

    async def upload_target(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget:
        """Where a client sends the bytes of the blob `key` straight to storage (a
        direct upload), valid for `expires_in` seconds: the API never carries them. The
        body is stored under `key` with `content_type`. The target accepts one write
        while `key` holds no blob (a second one must be refused, not replace the
        first), and refuses a body larger than `max_bytes` where the storage can (the
        API checks the stored size again before using the blob). The `file` backend
        gives a signed PUT to the API (`verify_upload`); S3 a presigned PUT."""
        ...

    def verify_upload(
        self, key: str, expires: int, max_bytes: int, content_type: str, signature: str
    ) -> None:
        """Check a signed upload URL's parameters before the API receives the bytes:
        as `verify_signed`, for the URLs `upload_target` made. A backend whose targets
        point elsewhere refuses every one as invalid."""
        ...

    async def check(self) -> None:
        """Raise `BlobUnavailableError` unless the store can be used now (for `/readyz`
        and a service's start: names what is wrong)."""
        ...

    async def close(self) -> None: ...


def validate_key(key: str) -> str:
    """Return `key` if it follows the key rules, else raise `BlobKeyError`."""
    if not key:
        raise BlobKeyError(key, "it is empty")
    _check_common(key)
    if key.endswith("/"):
        raise BlobKeyError(key, "it ends with '/'")
    return key


def validate_prefix(prefix: str) -> str:
    """Prefixes follow the key rules, except that '' and a trailing '/' are allowed."""
    if prefix:
        _check_common(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def validate_filename(filename: str) -> str:
    """A download name: non-empty, printable, at most 1024 bytes. Separators are
    allowed (an output may be `masks/a.png`); servers replace them in the header."""
    if not filename or _CONTROL.search(filename) or len(filename.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"filename {filename!r} must be non-empty printable text")
    return filename


def content_disposition(filename: str) -> str:
    """The `Content-Disposition` of a download named `filename` (separators replaced;
    an ASCII fallback and the UTF-8 name), for every backend's signed links."""
    filename = filename.replace("/", "_").replace("\\", "_")
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _check_common(key: str) -> None:
    if key.startswith("/"):
        raise BlobKeyError(key, "it starts with '/'")
    if "\\" in key or _CONTROL.search(key):
        raise BlobKeyError(key, "it holds a backslash or a control character")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise BlobKeyError(key, f"it is longer than {MAX_KEY_BYTES} bytes")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise BlobKeyError(key, "it has an empty, '.' or '..' segment")
