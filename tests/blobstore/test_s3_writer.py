"""The s3 backend's writer (`open_writer`) against a real S3 server (moto's server mode):
parts go up while the blob is still being written, to a temporary key that listings
never show; the object appears under its key at the commit, with its SHA-256, by a
server-side copy (one PUT up to two parts); an abort or an outage leaves no object."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from services.blobstore import BlobIntegrityError, BlobUnavailableError, S3BlobStore
from services.blobstore.s3 import MIN_PART_SIZE
from tests._s3 import Gate, raw, s3_store

PIECE = 64 * 1024


def _data(size: int) -> bytes:
    return hashlib.sha256(b"seed").digest() * (size // 32) + b"t" * (size % 32)


async def _write(writer: Any, data: bytes) -> None:
    for start in range(0, len(data), PIECE):
        await writer.write(data[start : start + PIECE])


async def _uploads(endpoint: str, bucket: str) -> list[str]:
    listed = await raw(endpoint, "list_multipart_uploads", Bucket=bucket)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


async def _objects(endpoint: str, bucket: str) -> list[str]:
    listed = await raw(endpoint, "list_objects_v2", Bucket=bucket)
    return [item["Key"] for item in listed.get("Contents", [])]


async def test_parts_go_up_as_the_blob_is_written_and_it_keeps_its_sha256(
    store: S3BlobStore, s3_endpoint: str
) -> None:
    data = _data(3 * MIN_PART_SIZE + 1000)
    writer = await store.open_writer("inputs/j1", "image/png")
    await _write(writer, data[: 2 * MIN_PART_SIZE + 1])  # the second part is full
    # The first part is on its way while the rest has not even been written.
    [incoming] = await _uploads(s3_endpoint, store.bucket)
    assert incoming.startswith(".incoming/")
    assert await _objects(s3_endpoint, store.bucket) == []
    await _write(writer, data[2 * MIN_PART_SIZE + 1 :])
    await writer.commit()
    head = await raw(s3_endpoint, "head_object", Bucket=store.bucket, Key="inputs/j1")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (head["ContentType"], head["ContentLength"]) == ("image/png", len(data))
    assert await store.get_bytes("inputs/j1") == data
    # The temporary object is gone, and no upload is left open.
    assert await _objects(s3_endpoint, store.bucket) == ["inputs/j1"]
    assert await _uploads(s3_endpoint, store.bucket) == []


@pytest.mark.parametrize("parts", [1, 2])
async def test_a_blob_of_up_to_two_parts_goes_up_in_one_put_at_the_commit(
    store: S3BlobStore, s3_endpoint: str, parts: int
) -> None:
    data = _data(parts * MIN_PART_SIZE)
    writer = await store.open_writer("inputs/j1", "text/plain")
    await _write(writer, data)
    assert await _uploads(s3_endpoint, store.bucket) == []
    await writer.commit()
    head = await raw(s3_endpoint, "head_object", Bucket=store.bucket, Key="inputs/j1")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "-" not in head["ETag"]  # a plain PUT, no copy
    assert head["ContentLength"] == len(data)
    assert await store.get_bytes("inputs/j1") == data
    assert await _objects(s3_endpoint, store.bucket) == ["inputs/j1"]


async def test_a_streamed_object_corrupted_in_the_store_is_refused(
    store: S3BlobStore, s3_endpoint: str, tmp_path: Path
) -> None:
    data = _data(2 * MIN_PART_SIZE + 7)
    writer = await store.open_writer("inputs/j1", "application/octet-stream")
    await _write(writer, data)
    await writer.commit()
    head = await raw(s3_endpoint, "head_object", Bucket=store.bucket, Key="inputs/j1")
    corrupted = data[:-1] + bytes([data[-1] ^ 1])  # one bit flipped, same size
    await raw(
        s3_endpoint,
        "put_object",
        Bucket=store.bucket,
        Key="inputs/j1",
        Body=corrupted,
        Metadata=head["Metadata"],
    )
    with pytest.raises(BlobIntegrityError) as exc:
        await store.get_bytes("inputs/j1")
    assert exc.value.expected == hashlib.sha256(data).hexdigest()
    with pytest.raises(BlobIntegrityError):
        await store.download_to("inputs/j1", tmp_path / "in.bin")
    assert not (tmp_path / "in.bin").exists()


async def test_an_abort_after_parts_were_sent_leaves_nothing(
    store: S3BlobStore, s3_endpoint: str
) -> None:
    writer = await store.open_writer("inputs/j1", "text/plain")
    await _write(writer, _data(3 * MIN_PART_SIZE))
    assert len(await _uploads(s3_endpoint, store.bucket)) == 1
    await writer.abort()
    assert await _uploads(s3_endpoint, store.bucket) == []
    assert await _objects(s3_endpoint, store.bucket) == []


async def test_past_the_copy_limit_the_object_is_copied_in_ranges(
    s3_endpoint: str, tmp_path: Path
) -> None:
    store = await s3_store(
        s3_endpoint,
        tmp_path,
        part_size=MIN_PART_SIZE,
        copy_limit=2 * MIN_PART_SIZE,
        copy_part_size=MIN_PART_SIZE,
    )
    try:
        data = _data(3 * MIN_PART_SIZE + 5)
        writer = await store.open_writer("packages/v1/package.zip", "application/zip")
        await _write(writer, data)
        await writer.commit()
        key = "packages/v1/package.zip"
        head = await raw(s3_endpoint, "head_object", Bucket=store.bucket, Key=key)
        assert head["ETag"].strip('"').endswith("-4")  # 4 ranges copied
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert head["ContentType"] == "application/zip"
        assert await store.get_bytes(key) == data
        assert await _objects(s3_endpoint, store.bucket) == [key]
        assert await _uploads(s3_endpoint, store.bucket) == []
    finally:
        await store.close()


async def test_listings_never_show_temporary_objects(store: S3BlobStore, s3_endpoint: str) -> None:
    # What a crash between the upload and the copy leaves (the lifecycle rule's to remove).
    await raw(s3_endpoint, "put_object", Bucket=store.bucket, Key=".incoming/x", Body=b"x")
    await store.put_bytes("inputs/j1", b"y", "text/plain")
    assert await store.list("") == ["inputs/j1"]
    assert await store.list_older("", before=2e9) == ["inputs/j1"]


async def test_an_outage_mid_write_is_a_typed_error(s3_endpoint: str, tmp_path: Path) -> None:
    gate = Gate(s3_endpoint)
    gate.open()
    store = await s3_store(gate.url, tmp_path, part_size=MIN_PART_SIZE, max_attempts=1)
    try:
        writer = await store.open_writer("inputs/j1", "text/plain")
        await _write(writer, _data(2 * MIN_PART_SIZE + 1))  # the first part on its way
        gate.close()
        with pytest.raises(BlobUnavailableError) as exc:
            await _write(writer, _data(2 * MIN_PART_SIZE))
            await writer.commit()
        assert exc.value.reason == "unreachable" and store.bucket in str(exc.value)
        await writer.abort()  # cannot reach S3: the lifecycle rule is the backstop
        gate.open()
        assert await _objects(s3_endpoint, store.bucket) == []
    finally:
        await store.close()
        gate.stop()
