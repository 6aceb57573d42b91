"""The signed-URL endpoint (services/api/routes_blobs.py) behind a real HTTP server (the
API's own, uvicorn, in a subprocess), fetched with the standard library's urllib."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.blobstore import FileBlobStore
from tests._infra import free_port, serving

REPO = Path(__file__).resolve().parents[2]
KEY = b"e2e-signing-key-" * 2

APP = textwrap.dedent(
    f"""
    import os
    from pathlib import Path
    from starlette.applications import Starlette
    from services.api.routes_blobs import blob_routes
    from services.blobstore import FileBlobStore

    store = FileBlobStore(Path(os.environ["BLOB_ROOT"]), os.environ["BASE_URL"], {KEY!r})
    app = Starlette(routes=blob_routes(store))
    """
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    (tmp_path / "blob_app.py").write_text(APP)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{REPO}"}
    env |= {"BLOB_ROOT": str(tmp_path / "root"), "BASE_URL": base_url}
    argv = [sys.executable, "-m", "services.api.server", "blob_app:app", "127.0.0.1", str(port)]
    with serving(
        argv, port, what="the server", cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ):  # fmt: skip
        yield base_url


def _fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


async def test_download_over_http(server: str, tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "root", server, KEY)
    data = bytes(range(256)) * 20_000  # ~5 MiB, streamed in chunks
    await store.put_bytes("outputs/j1/grayscale.png", data, "image/png")
    url = await store.signed_url("outputs/j1/grayscale.png", expires_in=60, filename="g.png")

    status, headers, body = await asyncio.to_thread(_fetch, url)
    assert (status, headers["content-type"], body == data) == (200, "image/png", True)
    assert headers["content-disposition"].startswith('attachment; filename="g.png"')

    status, headers, body = await asyncio.to_thread(_fetch, url.replace("g.png", "h.png"))
    assert (status, headers["content-type"]) == (403, "application/problem+json")

    missing = await store.signed_url("outputs/j1/none.png", expires_in=60)
    status, _, _ = await asyncio.to_thread(_fetch, missing)
    assert status == 404
