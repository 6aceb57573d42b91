"""Job files on the host: the input's local name, and uploading a job's outputs."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path

from events import OutputFile
from services.blobstore import BlobKeyError, BlobStore, FileBlobStore
from services.runtimes.base import OutputCopy

__all__ = ["job_log_key", "local_input_name", "upload_outputs"]

log = logging.getLogger("clinai.executor")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def job_log_key(job_id: str) -> str:
    return f"logs/jobs/{job_id}.log"


def local_input_name(filename: str) -> str:
    """The client's file name reduced to a safe basename that keeps its extension."""
    name = _UNSAFE.sub("_", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return name[:120] or "input"


async def upload_outputs(
    blobs: BlobStore, job_id: str, copies: Sequence[OutputCopy]
) -> tuple[OutputFile, ...]:
    """Store each output copy at `outputs/<job_id>/<name>`; the copies are the caller's
    scratch files: moved into the store, or removed."""
    outputs: list[OutputFile] = []
    try:
        for copy in copies:
            key = f"outputs/{job_id}/{copy.name}"
            content_type = mimetypes.guess_type(copy.name)[0] or "application/octet-stream"
            size = copy.path.stat().st_size
            try:
                if isinstance(blobs, FileBlobStore):  # renamed in, not copied
                    await blobs.move_in(key, copy.path, content_type)
                else:
                    await blobs.put_file(key, copy.path, content_type)
            except BlobKeyError as err:
                log.warning("job %s: output %r skipped: %s", job_id, copy.name, err)
                continue
            outputs.append(
                OutputFile(name=copy.name, key=key, size_bytes=size, content_type=content_type)
            )
    except BaseException:
        await asyncio.to_thread(_remove, [copy.path for copy in copies])
        raise
    if not isinstance(blobs, FileBlobStore):  # put_file copied them
        await asyncio.to_thread(_remove, [copy.path for copy in copies])
    return tuple(outputs)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
