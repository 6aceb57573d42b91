"""Job files on the host: the input's local name, and uploading a job's outputs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import re
import shutil
from pathlib import Path

from events import OutputFile
from services.blobstore import BlobKeyError, BlobStore, FileBlobStore

__all__ = ["job_log_key", "local_input_name", "remove_scratch", "upload_outputs"]

log = logging.getLogger("clinai.executor")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def job_log_key(job_id: str) -> str:
    return f"logs/jobs/{job_id}.log"


def local_input_name(filename: str) -> str:
    """The client's file name reduced to a safe basename that keeps its extension."""
    name = _UNSAFE.sub("_", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return name[:120] or "input"


def _files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, _dirs, names in os.walk(directory, followlinks=False):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found)


async def upload_outputs(blobs: BlobStore, job_id: str, directory: Path) -> tuple[OutputFile, ...]:
    """Upload every regular file under `directory` to `outputs/<job_id>/<relative path>`;
    the files are the caller's scratch copies and may be moved into the store."""
    outputs: list[OutputFile] = []
    for path in await asyncio.to_thread(_files, directory):
        name = path.relative_to(directory).as_posix()
        key = f"outputs/{job_id}/{name}"
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        size = path.stat().st_size
        try:
            if isinstance(blobs, FileBlobStore):  # the file is ours: renamed in, not copied
                await blobs.move_in(key, path, content_type)
            else:
                await blobs.put_file(key, path, content_type)
        except BlobKeyError as err:
            log.warning("job %s: output %r skipped: %s", job_id, name, err)
            continue
        outputs.append(OutputFile(name=name, key=key, size_bytes=size, content_type=content_type))
    return tuple(outputs)


async def remove_scratch(directory: Path) -> None:
    """Remove an attempt's folder: usually nothing to do (no outputs) or two rmdirs (its
    outputs were moved into the store); a full removal in a thread otherwise."""
    try:
        for folder in (directory / "out", directory):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(folder)
    except OSError:
        await asyncio.to_thread(shutil.rmtree, directory, True)
