"""What the Idempotency-Key tests share: a new key, the refusal they expect, and a blob
read from a stack's own store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.blobstore import BlobStore, S3BlobStore
from services.infra.connections import open_blob_store
from tests._s3 import s3_session
from tests.api._client import Reply
from tests.api.conftest import Stack

__all__ = ["new_key", "refused", "stack_blobs", "stored_bytes"]


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}


def refused(reply: Reply, created: str) -> None:
    """A 422 problem that says the key was used for another request, naming what it made."""
    assert reply.status == 422, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    detail = reply.body["detail"]
    assert "already used for a different request" in detail, detail
    assert created in detail and "new Idempotency-Key" in detail, detail


@asynccontextmanager
async def stack_blobs(stack: Stack) -> AsyncIterator[BlobStore]:
    """The stack's own blob store, opened as its services open it."""
    settings = stack.settings
    if settings.blob_backend == "s3":
        blobs: BlobStore = S3BlobStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            spool=settings.data_dir / "spool",
            session=s3_session(),
        )
    else:
        blobs = open_blob_store(settings)
    try:
        yield blobs
    finally:
        await blobs.close()


async def stored_bytes(stack: Stack, key: str) -> bytes:
    """The stored bytes of `key`, read from the stack's blob store itself."""
    async with stack_blobs(stack) as blobs:
        return await blobs.get_bytes(key)
