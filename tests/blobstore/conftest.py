"""The s3 backend's tests share one store per test: moto's server, parts of the smallest
size S3 takes (so that multipart shows with little data). `test_contract.py` has its own
`store`, one per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.blobstore import S3BlobStore
from services.blobstore.s3 import MIN_PART_SIZE
from tests._s3 import s3_store


@pytest.fixture
async def store(s3_endpoint: str, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    instance = await s3_store(s3_endpoint, tmp_path / "spool", part_size=MIN_PART_SIZE)
    try:
        yield instance
    finally:
        await instance.close()
