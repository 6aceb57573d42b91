"""The s3 backend's work on local files (run in worker threads): hashing a file, and
putting a downloaded file in place whole."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

__all__ = ["file_sha256", "sha256", "tmp_beside", "write_new"]


def tmp_beside(path: Path) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"


def write_new(path: Path, data: bytes) -> None:
    """`data` as the file `path`, put in place whole (its folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path, chunk: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
