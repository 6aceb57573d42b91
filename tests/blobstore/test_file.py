"""The file backend beyond the contract: layout, and signatures with an injected clock.
(The API's endpoint that serves the signed URLs: tests/api/test_routes_blobs.py.)"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from services.blobstore import (
    BlobKeyError,
    BlobSignatureExpiredError,
    BlobSignatureInvalidError,
    BlobUnavailableError,
    FileBlobStore,
)

KEY = b"s" * 32
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(tmp_path: Path, clock: Clock | None = None) -> FileBlobStore:
    return FileBlobStore(tmp_path / "root", "https://api.example/", KEY, clock=clock or Clock(NOW))


def test_constructor_validates_and_does_no_io(tmp_path: Path) -> None:
    make_store(tmp_path)
    assert not (tmp_path / "root").exists()
    with pytest.raises(ValueError, match="signing_key"):
        FileBlobStore(tmp_path, "https://x", b"short")
    with pytest.raises(ValueError, match="base_url"):
        FileBlobStore(tmp_path, "ftp://x", KEY)


async def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.put_bytes("a/b.txt", b"x", "text/plain")
    assert list((tmp_path / "root" / "tmp").iterdir()) == []
    assert (tmp_path / "root" / "blobs" / "a" / "b.txt").read_bytes() == b"x"


async def test_key_clashing_with_folder(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.put_bytes("a/b", b"x", "text/plain")
    with pytest.raises(BlobKeyError):
        await store.put_bytes("a/b/c", b"y", "text/plain")
    with pytest.raises(BlobKeyError):
        await store.put_bytes("a", b"y", "text/plain")
    assert await store.list("") == ["a/b"]


async def test_content_type_is_kept_with_the_blob(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.put_bytes("a/b.txt", b"x", "text/plain")
    assert await store.content_type("a/b.txt") == "text/plain"
    assert not (tmp_path / "root" / "meta").exists()  # an xattr, no second file to sync


async def test_a_meta_file_from_before_xattrs_is_still_read(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (tmp_path / "root" / "blobs").mkdir(parents=True)
    (tmp_path / "root" / "blobs" / "old.txt").write_bytes(b"x")
    (tmp_path / "root" / "meta").mkdir()
    (tmp_path / "root" / "meta" / "old.txt").write_text('{"content_type":"text/csv"}')
    assert await store.content_type("old.txt") == "text/csv"


async def test_move_in_renames_the_file_into_place(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    spool = await store.spool_dir()
    src = spool / "upload"
    src.write_bytes(b"payload")
    inode = src.stat().st_ino
    await store.move_in("inputs/j/in.png", src, "image/png")
    assert not src.exists()
    blob = tmp_path / "root" / "blobs" / "inputs" / "j" / "in.png"
    assert blob.stat().st_ino == inode  # renamed, not copied
    assert await store.get_bytes("inputs/j/in.png") == b"payload"
    assert await store.content_type("inputs/j/in.png") == "image/png"
    assert list(spool.iterdir()) == []


async def test_move_in_from_elsewhere_and_bad_keys(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    src = tmp_path / "elsewhere.bin"
    src.write_bytes(b"x")
    await store.move_in("k/a", src, "application/octet-stream")
    assert not src.exists()
    assert await store.get_bytes("k/a") == b"x"
    src.write_bytes(b"y")
    with pytest.raises(BlobKeyError):
        await store.move_in("k/a/b", src, "text/plain")
    assert not src.exists()
    assert list((tmp_path / "root" / "tmp").iterdir()) == []


# -- signatures --------------------------------------------------------------------


def split_url(url: str) -> tuple[str, int, str, str | None]:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return parts.path, int(query["expires"]), query["signature"], query.get("filename")


async def test_signed_url_shape_and_verify(tmp_path: Path) -> None:
    clock = Clock(NOW)
    store = make_store(tmp_path, clock)
    url = await store.signed_url("outputs/j 1/r.png", expires_in=300, filename="scan ü.png")
    assert url.startswith("https://api.example/v1/blobs/outputs/j%201/r.png?expires=")
    _, expires, signature, filename = split_url(url)
    assert expires == int(NOW) + 300 and len(signature) == 64 and filename == "scan ü.png"
    store.verify_signed("outputs/j 1/r.png", expires, signature, filename)
    clock.now = expires - 0.001
    store.verify_signed("outputs/j 1/r.png", expires, signature, filename)
    clock.now = expires
    with pytest.raises(BlobSignatureExpiredError) as exc:
        store.verify_signed("outputs/j 1/r.png", expires, signature, filename)
    assert exc.value.reason == "expired" and exc.value.hint


async def test_tampering_is_detected(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    _, expires, signature, _ = split_url(
        await store.signed_url("outputs/j1/a", expires_in=60, filename="a.png")
    )
    tampered = [
        ("outputs/j1/b", expires, signature, "a.png"),
        ("outputs/j1/a", expires + 3600, signature, "a.png"),
        ("outputs/j1/a", expires, signature, "b.png"),
        ("outputs/j1/a", expires, signature, None),
        ("outputs/j1/a", expires, signature[:-1] + "0", "a.png"),
        ("outputs/j1/a", expires, "", "a.png"),
    ]
    for key, exp, sig, name in tampered:
        with pytest.raises(BlobSignatureInvalidError) as exc:
            store.verify_signed(key, exp, sig, name)
        assert exc.value.reason == "invalid"
    other = FileBlobStore(tmp_path, "https://api.example", b"o" * 32, clock=Clock(NOW))
    with pytest.raises(BlobSignatureInvalidError):
        other.verify_signed("outputs/j1/a", expires, signature, "a.png")


async def test_invalid_beats_expired(tmp_path: Path) -> None:
    store = make_store(tmp_path, Clock(NOW + 10_000))
    with pytest.raises(BlobSignatureInvalidError):
        store.verify_signed("outputs/j1/a", int(NOW), "0" * 64, None)


async def test_upload_targets_are_signed_puts_to_the_api(tmp_path: Path) -> None:
    clock = Clock(NOW)
    store = make_store(tmp_path, clock)
    target = await store.upload_target(
        "uploads/u1/data", content_type="image/png", max_bytes=1000, expires_in=600
    )
    assert target.method == "PUT" and target.headers == {"Content-Type": "image/png"}
    assert target.expires == int(NOW) + 600
    parts = urlsplit(target.url)
    assert target.url.startswith("https://api.example/v1/blobs/uploads/u1/data?")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    args = ("uploads/u1/data", target.expires, 1000, "image/png", query["signature"])
    assert query["max_bytes"] == "1000" and query["content_type"] == "image/png"
    store.verify_upload(*args)
    for tampered in (
        ("uploads/u2/data", *args[1:]),
        (args[0], args[1], 10**9, *args[3:]),
        (*args[:3], "text/html", args[4]),
        (args[0], args[1] + 1, *args[2:]),
    ):
        with pytest.raises(BlobSignatureInvalidError):
            store.verify_upload(*tampered)
    # A download signature is not an upload one, nor the other way round.
    with pytest.raises(BlobSignatureInvalidError):
        store.verify_signed("uploads/u1/data", target.expires, query["signature"], None)
    clock.now = target.expires
    with pytest.raises(BlobSignatureExpiredError):
        store.verify_upload(*args)
    with pytest.raises(ValueError, match="max_bytes"):
        await store.upload_target("uploads/u1/data", content_type="x", max_bytes=0, expires_in=5)


async def test_check_names_a_folder_that_cannot_be_used(tmp_path: Path) -> None:
    (tmp_path / "root").write_bytes(b"a file where the folder should be")
    store = make_store(tmp_path)
    with pytest.raises(BlobUnavailableError) as exc:
        await store.check()
    assert str(tmp_path / "root") in str(exc.value) and "CLINAI_BLOB_DIR" in exc.value.hint
