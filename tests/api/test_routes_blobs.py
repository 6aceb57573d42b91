"""The signed-URL endpoint (services/api/routes_blobs.py) called as a real ASGI app (no
HTTP client library needed), over the file backend whose URLs it serves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette

from services.api.routes_blobs import blob_routes
from services.blobstore import FileBlobStore
from tests.blobstore.test_file import NOW, Clock, make_store


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
    return Starlette(routes=blob_routes(store))


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
