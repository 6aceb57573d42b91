"""Job files on the host: the input's local name, and uploading a job's outputs."""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path

from events import OutputFile
from services.blobstore import BlobKeyError, BlobStore, validate_key
from services.runtimes.base import OutputCopy

__all__ = [
    "discard_outputs",
    "job_log_key",
    "local_input_name",
    "output_key",
    "unstorable_outputs",
    "upload_outputs",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    blobs: BlobStore, job_id: str, copies: Sequence[OutputCopy]
) -> tuple[OutputFile, ...]:
    """Store each output copy at `outputs/<job_id>/<name>` (names checked first with
    `unstorable_outputs`); the copies are the caller's scratch files: moved into the
    store, or removed."""
    outputs: list[OutputFile] = []
    try:
        for copy in copies:
            key = output_key(job_id, copy.name)
            content_type = mimetypes.guess_type(copy.name)[0] or "application/octet-stream"
            size = copy.path.stat().st_size
            await blobs.move_in(key, copy.path, content_type)
            outputs.append(
                OutputFile(name=copy.name, key=key, size_bytes=size, content_type=content_type)
            )
    except BaseException:
        await asyncio.to_thread(_remove, [copy.path for copy in copies])
        raise
    return tuple(outputs)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
