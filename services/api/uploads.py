"""Streaming multipart uploads: files go straight to disk, or to the blob store as they
arrive (a `BlobWriter`, committed by the endpoint once it accepts the request), and the
size limit is enforced while reading, so an oversized upload is refused (413) without
being stored."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import msgspec
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from services.api.problems import ApiError
from services.api.request_body import body_chunks
from services.blobstore import BlobError, BlobWriter

__all__ = [
    "OpenBlob",
    "OpenPart",
    "ReceivedFile",
    "ReceivedForm",
    "drain_small_body",
    "receive_file",
    "receive_form",
]

# Opens the writer of a file field's blob, given the part's content type.
OpenBlob = Callable[[str], Awaitable[BlobWriter]]
# Opens the writer of a file part's blob, given its field, its index among the form's
# files and its content type.
OpenPart = Callable[[str, int, str], Awaitable[BlobWriter]]

_MAX_FIELD_BYTES = 64 * 1024
_MAX_FIELDS = 32
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_FILES = 16


class ReceivedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file field: on disk at `path` (when the form was received into a folder),
    and/or written to `blob` (the blob field; the endpoint commits it)."""

    path: Path | None = None
    blob: BlobWriter | None = None
    filename: str
    size: int
    content_type: str


class ReceivedForm(msgspec.Struct, frozen=True):
    fields: dict[str, str]
    files: dict[str, ReceivedFile]  # the first file of each name
    all_files: tuple[tuple[str, ReceivedFile], ...] = ()  # every file, in order

    async def discard(self) -> None:
        """Remove the received files that are still where they were written, and drop
        the blobs not committed."""
        for _, received in self.all_files:
            if received.path is not None:
                received.path.unlink(missing_ok=True)
            if received.blob is not None and not received.blob.done:  # (no task to shield)
                await asyncio.shield(received.blob.abort())


def safe_filename(name: str, default: str) -> str:
    base = os.path.basename(name.replace("\\", "/")).strip()
    cleaned = _SAFE_NAME.sub("_", base).strip("._")[:120]
    return cleaned or default


class _Collector:
    """The parser's callbacks. They are not async: what goes to a blob writer waits in
    `_pending` (at most one request chunk) until `flush`, after each chunk parsed."""

    def __init__(
        self,
        dest_dir: Path | None,
        file_limit: int,
        allowed: frozenset[str],
        blob_field: str | None,
        open_blob: OpenPart | None,
        open_names: bool,
    ) -> None:
        self.dest_dir = dest_dir
        self.file_limit = file_limit
        self.allowed = allowed
        self.blob_field = blob_field
        self.open_blob = open_blob
        self.open_names = open_names
        self.all_files: list[tuple[str, ReceivedFile]] = []
        self.writers: dict[int, BlobWriter] = {}  # by the file's index in `all_files`
        # (file index, data, or (field, content type) to open its writer)
        self._pending: list[tuple[int, bytes | tuple[str, str]]] = []
        self._to_blob = False
        # Several requests share dest_dir: its files are named after one uuid per form.
        self._prefix = "" if dest_dir is None else f"upload-{uuid.uuid4().hex}"
        self.fields: dict[str, str] = {}
        self.files: dict[str, ReceivedFile] = {}
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._content_type = "application/octet-stream"
        self._value = bytearray()
        self._out: BinaryIO | None = None
        self._out_path: Path | None = None
        self._size = 0

    def on_part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()
        self._size = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header_field.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self._header_field = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        self._filename = None if raw_filename is None else raw_filename.decode("utf-8", "replace")
        self._content_type = self._headers.get(b"content-type", b"application/octet-stream").decode(
            "latin-1"
        )
        self._check_name()
        if self._filename is not None:
            index = len(self.all_files)
            if index >= (_MAX_FILES if self.open_names else 4):
                raise ApiError(
                    422, "Too many files", f"send at most {_MAX_FILES} files per request"
                )
            self._to_blob = self.open_blob is not None and (
                self.blob_field is None or self._name == self.blob_field
            )
            if self._to_blob:
                self._pending.append((index, (self._name, self._content_type)))
            elif self.dest_dir is None:
                raise ApiError(
                    422,
                    "Not a file field",
                    f"the form field {self._name!r} is text: send it without a file name",
                )
            if self.dest_dir is not None:
                self._out_path = self.dest_dir / f"{self._prefix}-{index}"
                self._out = open(self._out_path, "wb")
        elif len(self.fields) >= _MAX_FIELDS:
            raise ApiError(422, "Too many fields", f"at most {_MAX_FIELDS} form fields")

    def _check_name(self) -> None:
        """Each part is one of the fields the endpoint reads, sent once: nothing is
        silently ignored, and no second value silently loses to the first."""
        fields = ", ".join(sorted(self.allowed))
        repeated = self._name in self.fields or self._name in self.files
        if self.open_names and self._filename is not None and self._name not in self.fields:
            repeated = False  # a list of files: one part per file, under one name
        if repeated:
            raise ApiError(
                422,
                "Form field repeated",
                f"the form field {self._name!r} was sent more than once; send it once",
            )
        if self._name not in self.allowed and not (
            self.open_names and _INPUT_NAME.fullmatch(self._name)
        ):
            raise ApiError(
                422,
                "Unknown form field",
                f"this endpoint reads the form fields {fields}, not {self._name[:100]!r}; "
                "remove that field or fix its name",
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._filename is not None:
            if self._size > self.file_limit:
                raise ApiError(
                    413,
                    "File too large",
                    f"the file is larger than the limit of {self.file_limit} bytes; "
                    "send a smaller file or ask the operator to raise the limit",
                )
            if self._out is not None:
                self._out.write(data[start:end])
            if self._to_blob:
                self._pending.append((len(self.all_files), data[start:end]))
        else:
            if self._size > _MAX_FIELD_BYTES:
                raise ApiError(413, "Field too large", f"form field {self._name!r} is too large")
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._filename is not None:
            if self._out is not None:
                self._out.close()
                self._out = None
            received = ReceivedFile(
                path=self._out_path,
                filename=safe_filename(self._filename or "", "upload"),
                size=self._size,
                content_type=self._content_type,
            )
            self.files.setdefault(self._name, received)
            self.all_files.append((self._name, received))
            self._out_path = None
            self._to_blob = False
        else:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    async def flush(self) -> None:
        """Open the blob writers and hand them the data the callbacks set aside."""
        pending, self._pending = self._pending, []
        for index, item in pending:
            if isinstance(item, tuple):
                if self.open_blob is not None:
                    name, content_type = item
                    self.writers[index] = await self.open_blob(name, index, content_type)
            else:
                await self.writers[index].write(item)

    def received(self) -> ReceivedForm:
        all_files = tuple(
            (name, msgspec.structs.replace(received, blob=self.writers.get(index)))
            for index, (name, received) in enumerate(self.all_files)
        )
        files: dict[str, ReceivedFile] = {}
        for name, received in all_files:
            files.setdefault(name, received)
        return ReceivedForm(fields=self.fields, files=files, all_files=all_files)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    async def discard(self) -> None:
        """Remove every file written, the one in progress too; drop the blobs."""
        self.close()
        self._pending = []
        for _, received in self.all_files:
            if received.path is not None:
                received.path.unlink(missing_ok=True)
        if self._out_path is not None:
            self._out_path.unlink(missing_ok=True)
        for writer in self.writers.values():
            await asyncio.shield(writer.abort())


async def drain_small_body(request: Request, limit: int = 1024 * 1024) -> None:
    """Read and drop a small request body before refusing the request, so the client
    gets the refusal instead of a reset connection; a large one is not worth reading."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= limit:
        async for _ in body_chunks(request):
            pass


async def receive_form(
    request: Request,
    *,
    file_limit: int,
    fields: frozenset[str],
    dest_dir: Path | None = None,
    blob_field: str | None = None,
    open_blob: OpenPart | None = None,
    open_names: bool = False,
) -> ReceivedForm:
    """The multipart body's `fields`: the file of `blob_field` (every file part, when
    None) to the writer `open_blob` gives, as it arrives (not committed: the caller
    commits or discards the form); files to `dest_dir` (those too, when given). 422 for
    a field not among `fields`, one sent twice, or a file in a text field when there is
    no `dest_dir`. With `open_names`, any identifier is accepted too (a typed input,
    checked by the caller), and a file part may repeat (a list of files)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            "Multipart body required",
            "send the file as multipart/form-data (e.g. curl -F field=@file)",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > file_limit + 1024 * 1024:
        raise ApiError(
            413,
            "Upload too large",
            f"the upload is larger than the limit of {file_limit} bytes; "
            "send a smaller file or ask the operator to raise the limit",
        )
    collector = _Collector(dest_dir, file_limit, fields, blob_field, open_blob, open_names)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
        },
    )
    try:
        try:
            async for chunk in body_chunks(request):
                parser.write(chunk)
                await collector.flush()
            parser.finalize()
            await collector.flush()
        except (ApiError, BlobError):  # our refusals; the store's failures (503)
            raise
        except Exception as err:
            raise ApiError(
                422, "Malformed multipart body", f"the multipart body could not be parsed: {err}"
            ) from err
    except BaseException:
        await collector.discard()
        raise
    finally:
        collector.close()
    return collector.received()


async def receive_file(
    request: Request,
    *,
    field: str,
    limit: int,
    dest_dir: Path | None = None,
    open_blob: OpenBlob | None = None,
) -> ReceivedFile:
    """The one file of the form, in `field` (to `dest_dir` and/or `open_blob`'s writer)."""
    form = await receive_form(
        request,
        file_limit=limit,
        fields=frozenset({field}),
        dest_dir=dest_dir,
        blob_field=field,
        open_blob=None if open_blob is None else lambda _name, _index, ct: open_blob(ct),
    )
    received = form.files.get(field)
    if received is None:
        await form.discard()
        raise ApiError(
            422, "File missing", f"send the file in the multipart field {field!r} (-F {field}=@...)"
        )
    return received
