"""A keyed command's blob taken as another attempt stored it (`commit_keyed`), and kept
when that blob went before the command's append landed (`keep_taken`)."""

from __future__ import annotations

from pathlib import Path

from services.api._keyed_commands import keep_taken
from services.api._request_digest import HashingWriter
from services.blobstore import FileBlobStore


async def _writer(blobs: FileBlobStore, key: str, data: bytes) -> HashingWriter:
    writer = HashingWriter(await blobs.open_writer(key, "image/png"))
    await writer.write(data)
    return writer


async def test_a_taken_blob_that_went_is_committed_from_the_requests_own_bytes(
    tmp_path: Path,
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    # The dead attempt's blob was taken, then its discard removed it: this request's
    # bytes go in its place (the job is in the log now).
    writer = await _writer(blobs, "inputs/job_gone", b"the photo")
    await keep_taken(blobs, writer)
    assert writer.done
    assert await blobs.get_bytes("inputs/job_gone") == b"the photo"
    # Still there: left as it is, and this request's bytes are dropped.
    await blobs.put_bytes("inputs/job_kept", b"the photo", "image/png")
    writer = await _writer(blobs, "inputs/job_kept", b"the photo")
    await keep_taken(blobs, writer)
    assert not writer.done
    await writer.abort()
    assert await blobs.get_bytes("inputs/job_kept") == b"the photo"
    await blobs.close()
