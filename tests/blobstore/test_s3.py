"""The s3 backend beyond the contract, against a real S3 server (moto's server mode):
checksums recorded and checked, multipart uploads, presigned links fetched with a plain
HTTP client, the prefix, and the typed errors of an unusable store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest

from services.blobstore import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobUnavailableError,
    S3BlobStore,
)
from services.blobstore.s3 import MIN_PART_SIZE
from tests._infra import free_port
from tests._s3 import SECRET_KEY, create_bucket, raw, s3_server, s3_session, s3_store


async def test_the_constructor_does_no_io(tmp_path: Path) -> None:
    store = S3BlobStore(bucket="b", spool=tmp_path / "spool", endpoint_url="http://127.0.0.1:1")
    assert not (tmp_path / "spool").exists()
    await store.close()
    with pytest.raises(ValueError, match="bucket"):
        S3BlobStore(bucket="", spool=tmp_path)
    with pytest.raises(ValueError, match="http"):
        S3BlobStore(bucket="b", spool=tmp_path, endpoint_url="ftp://x")
    with pytest.raises(ValueError, match="part_size"):
        S3BlobStore(bucket="b", spool=tmp_path, part_size=1024)


async def test_a_large_file_goes_up_in_parts_with_its_sha256(
    store: S3BlobStore, s3_endpoint: str, tmp_path: Path
) -> None:
    data = hashlib.sha256(b"seed").digest() * (3 * MIN_PART_SIZE // 32 + 5)  # 3 parts and a bit
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    await store.move_in("inputs/j1", src, "application/octet-stream")
    head = await raw(s3_endpoint, "head_object", Bucket=store.bucket, Key="inputs/j1")
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert head["ETag"].strip('"').endswith("-4")  # a multipart upload of 4 parts
    target = tmp_path / "job" / "in" / "big.bin"
    assert await store.materialize("inputs/j1", target) == target
    assert target.read_bytes() == data
    uploads = await raw(s3_endpoint, "list_multipart_uploads", Bucket=store.bucket)
    assert not uploads.get("Uploads")


async def test_a_corrupted_object_is_refused(
    store: S3BlobStore, s3_endpoint: str, tmp_path: Path
) -> None:
    await store.put_bytes("outputs/j1/a.png", b"the real bytes", "image/png")
    head = await raw(s3_endpoint, "head_object", Bucket=store.bucket, Key="outputs/j1/a.png")
    # Another writer replaces the content but not the recorded SHA-256 (a corruption).
    await raw(
        s3_endpoint,
        "put_object",
        Bucket=store.bucket,
        Key="outputs/j1/a.png",
        Body=b"the fake bytes",
        Metadata=head["Metadata"],
    )
    with pytest.raises(BlobIntegrityError) as exc:
        await store.get_bytes("outputs/j1/a.png")
    assert exc.value.key == "outputs/j1/a.png" and exc.value.hint
    target = tmp_path / "out" / "a.png"
    with pytest.raises(BlobIntegrityError):
        await store.download_to("outputs/j1/a.png", target)
    # Nothing put in place, no temporary left.
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
    stream = await store.open_stream("outputs/j1/a.png")
    with pytest.raises(BlobIntegrityError):
        async for _ in stream:
            pass


async def test_an_object_without_a_recorded_sha256_is_read(
    store: S3BlobStore, s3_endpoint: str
) -> None:
    await raw(s3_endpoint, "put_object", Bucket=store.bucket, Key="inputs/x", Body=b"abc")
    assert await store.get_bytes("inputs/x") == b"abc"


async def test_presigned_links_are_fetched_straight_from_s3(store: S3BlobStore) -> None:
    await store.put_bytes("outputs/j1/gray scan.png", b"png-bytes", "image/png")
    url = await store.signed_url("outputs/j1/gray scan.png", expires_in=300, filename="é.png")
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert await response.read() == b"png-bytes"
        assert response.headers["Content-Type"] == "image/png"
        assert "filename*=UTF-8''%C3%A9.png" in response.headers["Content-Disposition"]


async def test_links_use_the_public_endpoint(s3_endpoint: str, tmp_path: Path) -> None:
    public = "https://storage.example.org"
    store = await s3_store(s3_endpoint, tmp_path, public_endpoint_url=public)
    try:
        url = await store.signed_url("outputs/j1/a.png", expires_in=60)
        assert url.startswith(f"{public}/{store.bucket}/outputs/j1/a.png?")
    finally:
        await store.close()


async def test_keys_live_under_the_prefix(s3_endpoint: str, tmp_path: Path) -> None:
    store = await s3_store(s3_endpoint, tmp_path, prefix="clinai/prod")
    try:
        await store.put_bytes("inputs/j1", b"x", "text/plain")
        listed = await raw(s3_endpoint, "list_objects_v2", Bucket=store.bucket)
        assert [item["Key"] for item in listed["Contents"]] == ["clinai/prod/inputs/j1"]
        assert await store.list("") == ["inputs/j1"]
        assert await store.get_bytes("inputs/j1") == b"x"
    finally:
        await store.close()


# -- a store that cannot be used: typed errors that name it --------------------------


async def assert_unavailable(store: S3BlobStore, reason: str, tmp_path: Path) -> str:
    """Every kind of call fails with the same typed error; its text."""
    src = tmp_path / "src"
    src.write_bytes(b"x")
    calls = [
        store.check(),
        store.put_bytes("inputs/j1", b"x", "text/plain"),
        store.move_in("inputs/j1", src, "text/plain"),
        store.get_bytes("inputs/j1"),
        store.exists("inputs/j1"),
        store.list(""),
    ]
    text = ""
    for call in calls:
        with pytest.raises(BlobUnavailableError) as exc:
            await call
        assert exc.value.reason == reason and exc.value.hint
        assert store.bucket in str(exc.value)
        text = f"{exc.value} {exc.value.hint}"
    assert not src.exists()  # move_in took the file over all the same
    return text


async def test_a_missing_bucket(s3_endpoint: str, tmp_path: Path) -> None:
    store = S3BlobStore(
        bucket="no-such-bucket", spool=tmp_path, endpoint_url=s3_endpoint, session=s3_session()
    )
    try:
        text = await assert_unavailable(store, "no_bucket", tmp_path)
        assert "does not exist" in text and "CLINAI_S3_BUCKET" in text
    finally:
        await store.close()


async def test_an_unreachable_server(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3BlobStore(
        bucket="b", spool=tmp_path, endpoint_url=endpoint, session=s3_session(), max_attempts=1
    )
    try:
        text = await assert_unavailable(store, "unreachable", tmp_path)
        assert endpoint in text and "CLINAI_S3_ENDPOINT_URL" in text
    finally:
        await store.close()


async def test_wrong_credentials(tmp_path: Path) -> None:
    with s3_server(auth=True) as endpoint:
        store = S3BlobStore(bucket="b", spool=tmp_path, endpoint_url=endpoint, session=s3_session())
        try:
            text = await assert_unavailable(store, "credentials", tmp_path)
            assert "InvalidAccessKeyId" in text and "AWS_ACCESS_KEY_ID" in text
            assert SECRET_KEY not in text
        finally:
            await store.close()


async def test_a_blob_missing_from_an_existing_bucket_is_not_an_outage(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = await create_bucket(s3_endpoint)
    store = S3BlobStore(
        bucket=bucket, spool=tmp_path, endpoint_url=s3_endpoint, session=s3_session()
    )
    try:
        await store.check()
        with pytest.raises(BlobNotFoundError):
            await store.size("inputs/none")
        assert not await store.exists("inputs/none")
    finally:
        await store.close()
