"""Job files on the host: the input's local name, and uploading a job's outputs."""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from events import OutputFile
from services.blobstore import BlobKeyError, BlobStore, validate_key
from services.runtimes.base import OutputCopy

__all__ = [
    "UPLOADS_AT_ONCE",
    "discard_outputs",
    "job_log_key",
    "local_input_name",
    "output_key",
    "unstorable_outputs",
    "upload_outputs",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Outputs stored at once by one job. Each upload mostly waits (a request to S3, an fsync
# on the file backend), so a few in flight cut a many-output job's time several times
# over (`python -m bench.outputs`); more gain little and cost: on S3 each holds up to two
# 8 MiB parts in memory, on the file backend each holds one of the process's few default
# worker threads, which every other job's file work shares.
UPLOADS_AT_ONCE: Final = 4


def job_log_key(job_id: str) -> str:
    return f"logs/jobs/{job_id}.log"


def output_key(job_id: str, name: str) -> str:
    return f"outputs/{job_id}/{name}"


def unstorable_outputs(job_id: str, copies: Sequence[OutputCopy]) -> str | None:
    """Why some of the outputs' names cannot be stored (each name escaped, with its
    problem), or None when all can."""
    problems: list[str] = []
    for copy in copies:
        name = ascii(copy.name)  # escaped: it may hold anything but NUL and '/'
        try:
            copy.name.encode()
        except UnicodeEncodeError:
            problems.append(f"{name} (it is not valid UTF-8)")
            continue
        try:
            validate_key(output_key(job_id, copy.name))
        except BlobKeyError as err:
            problems.append(f"{name} ({err.problem})")
    if not problems:
        return None
    shown = "; ".join(problems[:5])
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return (
        f"the job wrote outputs whose names cannot be stored: {shown}{more}. Output names "
        "must be UTF-8 text without control characters or backslashes, and "
        "'outputs/<job id>/<name>' at most 1024 bytes long"
    )


def local_input_name(filename: str) -> str:
    """The client's file name reduced to a safe basename that keeps its extension."""
    name = _UNSAFE.sub("_", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return name[:120] or "input"


async def discard_outputs(copies: Sequence[OutputCopy]) -> None:
    """Remove the runtime's copies of outputs that will not be stored."""
    await asyncio.to_thread(_remove, [copy.path for copy in copies])


async def upload_outputs(
    blobs: BlobStore,
    job_id: str,
    copies: Sequence[OutputCopy],
    *,
    at_once: int = UPLOADS_AT_ONCE,
) -> tuple[OutputFile, ...]:
    """Store each output copy at `outputs/<job_id>/<name>` (names checked first with
    `unstorable_outputs`), up to `at_once` at a time, and list them in the copies' order.
    The copies are the caller's scratch files: moved into the store, or removed. When one
    fails, no further one is begun, those under way are awaited, and its error is raised
    (the first, when several fail): never a partial list."""
    if at_once < 1:
        raise ValueError("upload_outputs: at_once must be at least 1")
    if not copies:
        return ()
    try:
        if len(copies) > 1 and at_once > 1:
            return await _upload_several(blobs, job_id, copies, at_once)
        outputs = []  # one output (most jobs that have any): no tasks to make
        for copy in copies:
            outputs.append(await _upload(blobs, job_id, copy))
        return tuple(outputs)
    except BaseException:
        await asyncio.to_thread(_remove, [copy.path for copy in copies])
        raise


async def _upload_several(
    blobs: BlobStore, job_id: str, copies: Sequence[OutputCopy], at_once: int
) -> tuple[OutputFile, ...]:
    stored: list[OutputFile | None] = [None] * len(copies)
    pending = iter(range(len(copies)))  # shared: each uploader takes the next copy
    failed: list[BaseException] = []

    async def uploader() -> None:
        for index in pending:
            if failed:
                return
            try:
                stored[index] = await _upload(blobs, job_id, copies[index])
            except Exception as err:  # the first error stops every uploader
                failed.append(err)
                return

    uploaders = [asyncio.ensure_future(uploader()) for _ in range(min(at_once, len(copies)))]
    try:
        await asyncio.gather(*uploaders)
    except BaseException:  # cancelled: so are the uploaders (by gather); wait for them
        await asyncio.wait(uploaders)
        raise
    if failed:
        raise failed[0]
    return tuple(output for output in stored if output is not None)


async def _upload(blobs: BlobStore, job_id: str, copy: OutputCopy) -> OutputFile:
    key = output_key(job_id, copy.name)
    content_type = mimetypes.guess_type(copy.name)[0] or "application/octet-stream"
    size = copy.path.stat().st_size
    await blobs.move_in(key, copy.path, content_type)
    return OutputFile(name=copy.name, key=key, size_bytes=size, content_type=content_type)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
