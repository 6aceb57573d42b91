"""The BlobStore contract: every backend passes these tests.

Backends are listed in BACKENDS: `file`, and `s3` against a real S3 server (moto's
server mode, `s3_endpoint`), a fresh bucket per test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.blobstore import (
    BlobError,
    BlobExistsError,
    BlobKeyError,
    BlobNotFoundError,
    BlobSignatureInvalidError,
    BlobStore,
    BlobWriter,
    FileBlobStore,
)
from services.blobstore.s3 import MIN_PART_SIZE
from tests._s3 import s3_store

SIGNING_KEY = b"k" * 32
StoreFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[BlobStore]]


async def _file_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "blobs", "http://testserver", SIGNING_KEY, chunk_size=64 * 1024)


async def _s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    endpoint = request.getfixturevalue("s3_endpoint")
    # Small parts and chunks: the multipart and chunked paths run on a few MiB.
    return await s3_store(
        endpoint, tmp_path / "spool", part_size=MIN_PART_SIZE, chunk_size=64 * 1024
    )


BACKENDS: dict[str, StoreFactory] = {"file": _file_store, "s3": _s3_store}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    instance = await BACKENDS[request.param](request, tmp_path)
    try:
        yield instance
    finally:
        await instance.close()


BAD_KEYS = ["", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a\\b", "a\nb"]


async def test_put_get_roundtrip(store: BlobStore) -> None:
    await store.put_bytes("outputs/j1/result.json", b'{"ok": true}', "application/json")
    assert await store.get_bytes("outputs/j1/result.json") == b'{"ok": true}'
    assert await store.exists("outputs/j1/result.json")
    assert await store.size("outputs/j1/result.json") == 12


async def test_put_file_and_stream_in_chunks(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 48_000  # ~12 MiB: several chunks, and parts on s3
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    await store.put_file("packages/v1/package.zip", src, "application/zip")
    stream = await store.open_stream("packages/v1/package.zip")
    assert (stream.size, stream.content_type) == (len(data), "application/zip")
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 1 and b"".join(chunks) == data
    await stream.aclose()  # idempotent after exhaustion


async def test_stream_closed_early(store: BlobStore) -> None:
    await store.put_bytes("logs/a.txt", b"x" * 300_000, "text/plain")
    stream = await store.open_stream("logs/a.txt")
    async for _ in stream:
        break
    await stream.aclose()
    assert [c async for c in stream] == []


async def test_overwrite_replaces(store: BlobStore) -> None:
    await store.put_bytes("inputs/j1/a.png", b"old", "image/png")
    await store.put_bytes("inputs/j1/a.png", b"newer", "image/jpeg")
    assert await store.get_bytes("inputs/j1/a.png") == b"newer"
    stream = await store.open_stream("inputs/j1/a.png")
    assert stream.content_type == "image/jpeg"
    await stream.aclose()


async def test_missing_blob(store: BlobStore, tmp_path: Path) -> None:
    assert not await store.exists("outputs/none")
    for call in (
        store.get_bytes("outputs/none"),
        store.size("outputs/none"),
        store.open_stream("outputs/none"),
        store.download_to("outputs/none", tmp_path / "x"),
        store.materialize("outputs/none", tmp_path / "x"),
    ):
        with pytest.raises(BlobNotFoundError) as exc:
            await call
        assert exc.value.key == "outputs/none" and exc.value.hint
    assert not (tmp_path / "x").exists()


async def test_prefix_of_a_key_is_not_a_blob(store: BlobStore) -> None:
    await store.put_bytes("outputs/j1/a", b"a", "text/plain")
    assert not await store.exists("outputs/j1")
    with pytest.raises(BlobNotFoundError):
        await store.get_bytes("outputs/j1")


async def test_download_to(store: BlobStore, tmp_path: Path) -> None:
    await store.put_bytes("inputs/j1/scan.png", b"png-bytes", "image/png")
    target = tmp_path / "job" / "in" / "scan.png"
    await store.download_to("inputs/j1/scan.png", target)
    assert target.read_bytes() == b"png-bytes"
    assert [p.name for p in target.parent.iterdir()] == ["scan.png"]


async def test_list(store: BlobStore) -> None:
    keys = ["inputs/j1/a", "inputs/j1/sub/b", "inputs/j10/c", "outputs/j1/d", "logs/x"]
    for key in keys:
        await store.put_bytes(key, key.encode(), "text/plain")
    assert await store.list("inputs/j1/") == ["inputs/j1/a", "inputs/j1/sub/b"]
    assert await store.list("inputs/j1") == ["inputs/j1/a", "inputs/j1/sub/b", "inputs/j10/c"]
    assert await store.list("") == sorted(keys)
    assert await store.list("nothing/here/") == []


async def test_list_older(store: BlobStore) -> None:
    await store.put_bytes("inputs/j1", b"a", "text/plain")
    await store.put_bytes("outputs/j1/x", b"b", "text/plain")
    assert await store.list_older("inputs/", time.time() + 60) == ["inputs/j1"]
    assert await store.list_older("inputs/", time.time() - 3600) == []


async def test_delete(store: BlobStore) -> None:
    await store.put_bytes("inputs/j1", b"a", "text/plain")
    await store.put_bytes("inputs/j2", b"b", "text/plain")
    await store.delete("inputs/j1")
    await store.delete("inputs/j1")  # again: no error
    assert not await store.exists("inputs/j1")
    assert await store.list("inputs/") == ["inputs/j2"]
    with pytest.raises(BlobNotFoundError):
        await store.get_bytes("inputs/j1")
    with pytest.raises(BlobKeyError):
        await store.delete("a/../b")


async def test_unicode_and_space_keys(store: BlobStore) -> None:
    key = "outputs/j1/résumé final.png"
    await store.put_bytes(key, b"x", "image/png")
    assert await store.list("outputs/j1/") == [key]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_refused(store: BlobStore, key: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls: list[Awaitable[object]] = [
        store.put_bytes(key, b"x", "text/plain"),
        store.put_file(key, src, "text/plain"),
        store.get_bytes(key),
        store.exists(key),
        store.size(key),
        store.download_to(key, tmp_path / "out"),
        store.open_stream(key),
        store.signed_url(key, expires_in=60),
        store.materialize(key, tmp_path / "out"),
        store.move_in(key, src, "text/plain"),  # last: it takes `src` over
    ]
    for call in calls:
        with pytest.raises(BlobKeyError):
            await call


@pytest.mark.parametrize("prefix", ["/", "/a", "a/../", "a//"])
async def test_bad_prefix_refused(store: BlobStore, prefix: str) -> None:
    with pytest.raises(BlobKeyError):
        await store.list(prefix)


async def test_signed_url_arguments(store: BlobStore) -> None:
    url = await store.signed_url("outputs/j1/a.png", expires_in=60, filename="a.png")
    assert url.startswith("http")
    with pytest.raises(ValueError):
        await store.signed_url("outputs/j1/a.png", expires_in=0)
    with pytest.raises(ValueError):
        await store.signed_url("outputs/j1/a.png", expires_in=8 * 24 * 3600)
    with pytest.raises(ValueError):
        await store.signed_url("outputs/j1/a.png", expires_in=60, filename="a\r\nX: y")


# -- local files: handing a file to the store, and a blob to a job --------------------


async def test_move_in_from_the_spool_dir(store: BlobStore) -> None:
    spool = await store.spool_dir()
    assert spool.is_dir()
    src = spool / "upload-1"
    src.write_bytes(b"payload")
    await store.move_in("inputs/j1", src, "image/png")
    assert not src.exists()
    assert await store.get_bytes("inputs/j1") == b"payload"
    stream = await store.open_stream("inputs/j1")
    assert stream.content_type == "image/png"
    await stream.aclose()
    assert await store.list("") == ["inputs/j1"]
    assert await store.spool_dir() == spool


async def test_move_in_from_any_local_folder(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "elsewhere" / "output-1"
    src.parent.mkdir()
    src.write_bytes(b"x" * 200_000)
    await store.move_in("outputs/j1/a.bin", src, "application/octet-stream")
    assert not src.exists()
    assert await store.size("outputs/j1/a.bin") == 200_000
    src.write_bytes(b"y")
    await store.move_in("outputs/j1/a.bin", src, "text/plain")  # replaces
    assert await store.get_bytes("outputs/j1/a.bin") == b"y"


async def test_move_in_takes_the_file_even_when_it_fails(store: BlobStore, tmp_path: Path) -> None:
    for where in (tmp_path, await store.spool_dir()):
        src = where / "refused"
        src.write_bytes(b"x")
        with pytest.raises(BlobKeyError):
            await store.move_in("a/../b", src, "text/plain")
        assert not src.exists()
    assert list((await store.spool_dir()).iterdir()) == []
    with pytest.raises(FileNotFoundError):
        await store.move_in("inputs/j1", tmp_path / "never-written", "text/plain")
    assert await store.list("") == []


async def test_materialize_gives_a_readable_local_file(store: BlobStore, tmp_path: Path) -> None:
    await store.put_bytes("inputs/j1", b"png-bytes", "image/png")
    target = tmp_path / "job" / "in" / "scan.png"
    local = await store.materialize("inputs/j1", target)
    assert local.read_bytes() == b"png-bytes"
    # Either the stored file itself (then `target` is left alone) or a download there.
    assert local == target or not target.exists()
    assert await store.get_bytes("inputs/j1") == b"png-bytes"


async def test_verify_signed_refuses_what_the_store_did_not_sign(store: BlobStore) -> None:
    expires = int(time.time()) + 60
    with pytest.raises(BlobSignatureInvalidError):
        store.verify_signed("outputs/j1/a.png", expires, "0" * 64, None)


async def test_check_passes_on_a_usable_store(store: BlobStore) -> None:
    await store.check()
    await store.put_bytes("inputs/j1", b"x", "text/plain")
    await store.check()


async def _write_in_pieces(writer: BlobWriter, data: bytes, piece: int = 64 * 1024) -> None:
    for start in range(0, len(data), piece):
        await writer.write(data[start : start + piece])


async def test_a_writer_makes_the_blob_appear_whole_at_commit(store: BlobStore) -> None:
    data = bytes(range(256)) * 48_000  # ~12 MiB: several buffers, and parts on s3
    writer = await store.open_writer("inputs/j1", "image/png")
    await _write_in_pieces(writer, data)
    assert writer.size == len(data)
    assert not await store.exists("inputs/j1")  # nothing visible before the commit
    assert await store.list("") == []
    assert not writer.done
    await writer.commit()
    assert writer.done
    assert await store.get_bytes("inputs/j1") == data
    assert list((await store.spool_dir()).iterdir()) == []  # no file left behind
    stream = await store.open_stream("inputs/j1")
    assert (stream.size, stream.content_type) == (len(data), "image/png")
    await stream.aclose()
    assert await store.list("") == ["inputs/j1"]
    await writer.abort()  # nothing, after the commit
    assert await store.get_bytes("inputs/j1") == data


async def test_a_writer_of_a_few_bytes_or_none(store: BlobStore) -> None:
    for key, data in (("inputs/small", b"png-bytes"), ("inputs/empty", b"")):
        writer = await store.open_writer(key, "application/octet-stream")
        await writer.write(data)
        await writer.commit()
        assert writer.done
        assert await store.get_bytes(key) == data
        assert await store.size(key) == len(data)
    assert list((await store.spool_dir()).iterdir()) == []  # no file left behind


async def test_a_writer_replaces_a_blob_atomically(store: BlobStore) -> None:
    await store.put_bytes("inputs/j1", b"old", "text/plain")
    writer = await store.open_writer("inputs/j1", "application/octet-stream")
    await _write_in_pieces(writer, b"n" * (6 * 1024 * 1024))
    assert await store.get_bytes("inputs/j1") == b"old"  # until the commit
    await writer.commit()
    assert await store.get_bytes("inputs/j1") == b"n" * (6 * 1024 * 1024)


async def test_a_writer_that_may_not_replace_keeps_the_stored_blob(store: BlobStore) -> None:
    """`commit(replace=False)`: the first of two writers (of a few bytes, or many sent in
    parts), committed in either order, stays; the other raises BlobExistsError."""
    for n, size in enumerate((100, 6 * 1024 * 1024)):
        key = f"inputs/j{n}"
        first = await store.open_writer(key, "text/plain")
        second = await store.open_writer(key, "text/plain")
        await _write_in_pieces(second, b"2" * size)
        await _write_in_pieces(first, b"1" * size)
        await first.commit(replace=False)
        with pytest.raises(BlobExistsError):
            await second.commit(replace=False)
        assert second.done  # nothing left of it to abort
        assert await store.get_bytes(key) == b"1" * size
    for n in range(2):  # both at once: one wins, whole; the other is refused
        key = f"inputs/race{n}"
        writers = [await store.open_writer(key, "text/plain") for _ in range(2)]
        for mark, writer in zip(b"ab", writers, strict=True):
            await _write_in_pieces(writer, bytes([mark]) * 100)
        results = await asyncio.gather(
            *(w.commit(replace=False) for w in writers), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["BlobExistsError", "NoneType"]
        assert await store.get_bytes(key) in (b"a" * 100, b"b" * 100)
    assert list((await store.spool_dir()).iterdir()) == []  # no file left behind


async def test_an_aborted_writer_leaves_nothing(store: BlobStore) -> None:
    for size in (100, 12 * 1024 * 1024):  # held whole; sent in parts on s3
        writer = await store.open_writer("inputs/j1", "text/plain")
        await _write_in_pieces(writer, b"x" * size)
        await writer.abort()
        assert writer.done
        await writer.abort()  # idempotent
        assert not await store.exists("inputs/j1")
        assert await store.list("") == []
        with pytest.raises(BlobError):
            await writer.write(b"more")
        with pytest.raises(BlobError):
            await writer.commit()
    assert list((await store.spool_dir()).iterdir()) == []


async def test_open_writer_checks_the_key(store: BlobStore) -> None:
    for key in BAD_KEYS:
        with pytest.raises(BlobKeyError):
            await store.open_writer(key, "text/plain")
