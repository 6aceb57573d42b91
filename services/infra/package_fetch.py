"""A version's package, from the blob store to an unpacked folder: what the builder
builds from, and what an executor rebuilds from when the artifact is not on its host."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.blobstore import BlobStore
from services.packages import unpack_package
from services.runtimes.base import LogSink

__all__ = ["fetch_package"]


async def fetch_package(
    blobs: BlobStore, key: str, size_bytes: int, directory: Path, log: LogSink
) -> Path:
    """Download the package stored at `key` into `directory` and unpack it there; the
    unpacked folder. Raises BlobNotFoundError (or another BlobError) and
    PackageInvalidError."""
    zip_path = directory / "package.zip"
    package_dir = directory / "package"
    await log(f"$ download the package ({size_bytes} bytes)\n")
    await blobs.download_to(key, zip_path)
    await log("$ unpack the package\n")
    await asyncio.to_thread(unpack_package, zip_path, package_dir)
    return package_dir
