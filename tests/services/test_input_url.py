"""The executor's fetch of an input by URL (services/executor/_input_url.py) against a
real HTTP server on loopback: the address guard after DNS and on every redirect, the
size cap, the time limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from services.domain.destinations import DestinationPolicy
from services.executor._input_url import InputUnavailableError, UrlInputs
from tests._infra import free_port, http_files

LOOPBACK = DestinationPolicy.from_setting("127.0.0.0/8")


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """'/in' (5 bytes), '/big' (streamed, no Content-Length), '/to-metadata' (a
    redirect), '/stuck' (answers once the event is set)."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        match request.path:
            case "/in":
                return web.Response(body=b"hello")
            case "/big":
                resp = web.StreamResponse()
                await resp.prepare(request)
                for _ in range(8):
                    await resp.write(b"x" * 1024)
                return resp
            case "/to-metadata":
                raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
            case "/stuck":
                await release.wait()
                return web.Response(body=b"late")
        raise web.HTTPNotFound()

    async with http_files(handle) as base:
        try:
            yield int(base.rsplit(":", 1)[1]), release
        finally:
            release.set()  # before the server waits for its handlers


def _inputs(
    policy: DestinationPolicy, *, max_bytes: int = 4096, timeout_s: float = 10
) -> UrlInputs:
    return UrlInputs(policy, max_bytes=max_bytes, timeout_s=timeout_s)


async def test_an_allowed_url_is_fetched(server: tuple[int, asyncio.Event], tmp_path: Path) -> None:
    port, _ = server
    path = tmp_path / "job" / "in" / "in.bin"
    assert await _inputs(LOOPBACK).fetch(f"http://127.0.0.1:{port}/in", path) == 5
    assert path.read_bytes() == b"hello"


async def test_the_guard_applies_after_dns_and_to_redirects(
    server: tuple[int, asyncio.Event], tmp_path: Path
) -> None:
    port, _ = server
    path = tmp_path / "in.bin"
    # A name that resolves to loopback, with no exemption: refused after DNS.
    with pytest.raises(InputUnavailableError, match="loopback") as exc:
        await _inputs(DestinationPolicy()).fetch(f"http://localhost:{port}/in", path)
    assert "public addresses only" in (exc.value.hint or "")
    # An allowed server redirecting to the metadata address: the hop is refused.
    with pytest.raises(InputUnavailableError, match="metadata"):
        await _inputs(LOOPBACK).fetch(f"http://127.0.0.1:{port}/to-metadata", path)
    # A literal address outside the exemption is refused before any connection.
    only_v4 = DestinationPolicy.from_setting("127.0.0.1/32")
    with pytest.raises(InputUnavailableError, match="refused"):
        await _inputs(only_v4).fetch(f"http://[::1]:{port}/in", path)
    assert not path.exists()


async def test_size_cap_and_time_limit(server: tuple[int, asyncio.Event], tmp_path: Path) -> None:
    port, _ = server
    path = tmp_path / "in.bin"
    with pytest.raises(InputUnavailableError, match="CLINAI_MAX_INPUT_BYTES") as exc:
        await _inputs(LOOPBACK, max_bytes=4096).fetch(f"http://127.0.0.1:{port}/big", path)
    assert "4096" in str(exc.value)
    assert not path.exists()  # nothing partial is left
    with pytest.raises(InputUnavailableError, match="CLINAI_INPUT_URL_TIMEOUT_S"):
        await _inputs(LOOPBACK, timeout_s=0.3).fetch(f"http://127.0.0.1:{port}/stuck", path)
    with pytest.raises(InputUnavailableError, match="HTTP 404"):
        await _inputs(LOOPBACK).fetch(f"http://127.0.0.1:{port}/nothing", path)
    free = free_port()  # nothing listens there
    with pytest.raises(InputUnavailableError, match="could not fetch"):
        await _inputs(LOOPBACK).fetch(f"http://127.0.0.1:{free}/in", path)
