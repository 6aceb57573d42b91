"""The file backend beyond the contract: layout, signatures with an injected clock, and
the signed-URL endpoint called as a real ASGI app (no HTTP client library needed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from services.blobstore import (
    SIGNED_BLOB_ROUTE,
    BlobKeyError,
    BlobSignatureExpiredError,
    BlobSignatureInvalidError,
    FileBlobStore,
    signed_blob_endpoint,
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


# -- endpoint over ASGI --------------------------------------------------------------


async def asgi_get(app: Any, url: str) -> tuple[int, dict[str, str], bytes]:
    """Drive one GET through an ASGI app and collect the response."""
    parts = urlsplit(url)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(parts.path),
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    requested = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, body


def make_app(store: FileBlobStore) -> Starlette:
    return Starlette(routes=[Route(SIGNED_BLOB_ROUTE, signed_blob_endpoint(store))])


async def test_endpoint_streams_blob(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    data = b"\x89PNG" + bytes(3 * 1024 * 1024)
    await store.put_bytes("outputs/j1/grayscale.png", data, "image/png")
    url = await store.signed_url("outputs/j1/grayscale.png", expires_in=60, filename="gray ü.png")
    status, headers, body = await asgi_get(make_app(store), url)
    assert status == 200 and body == data
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(data))
    assert headers["content-disposition"] == (
        "attachment; filename=\"gray _.png\"; filename*=UTF-8''gray%20%C3%BC.png"
    )
    assert headers["x-content-type-options"] == "nosniff"


async def test_endpoint_nested_filename(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.put_bytes("outputs/j1/masks/a.png", b"x", "image/png")
    url = await store.signed_url("outputs/j1/masks/a.png", expires_in=60, filename="masks/a.png")
    status, headers, _ = await asgi_get(make_app(store), url)
    assert status == 200
    assert headers["content-disposition"] == (
        "attachment; filename=\"masks_a.png\"; filename*=UTF-8''masks_a.png"
    )


async def test_endpoint_default_filename(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.put_bytes("outputs/j1/report.json", b"{}", "application/json")
    url = await store.signed_url("outputs/j1/report.json", expires_in=60)
    status, headers, _ = await asgi_get(make_app(store), url)
    assert status == 200 and 'filename="report.json"' in headers["content-disposition"]


def assert_problem(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert set(problem) == {"type", "title", "status", "detail"}
    assert problem["status"] == expected
    return str(problem["title"])


async def test_endpoint_refusals(tmp_path: Path) -> None:
    clock = Clock(NOW)
    store = make_store(tmp_path, clock)
    app = make_app(store)
    await store.put_bytes("outputs/j1/a.png", b"x", "image/png")
    url = await store.signed_url("outputs/j1/a.png", expires_in=60)

    assert assert_problem(*await asgi_get(app, url.replace("a.png?", "b.png?")), 403) == (
        "Invalid signature"
    )
    no_signature = url.split("&signature=")[0]
    assert assert_problem(*await asgi_get(app, no_signature), 403) == "Invalid signature"
    bad_expires = url.replace("expires=", "expires=x")
    assert assert_problem(*await asgi_get(app, bad_expires), 403) == "Invalid signature"

    missing = await store.signed_url("outputs/j1/missing.png", expires_in=60)
    assert assert_problem(*await asgi_get(app, missing), 404) == "Blob not found"

    clock.now = NOW + 61
    assert assert_problem(*await asgi_get(app, url), 403) == "Signed URL expired"
