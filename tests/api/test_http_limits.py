"""The request head is bounded: an endless or over-long header, or too many headers, is
answered 431 and the connection closed, and the API's memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.settings import Settings, SettingsError
from tests.api._raw import raw_request
from tests.api.conftest import Stack

_SENT_AT_MOST = 8 * 1024 * 1024  # per connection: the limit is 64 KiB


def _api_rss_bytes(stack: Stack) -> int:
    (api,) = [p for p in stack.procs if p.args[-1] == "api"]  # type: ignore[index]
    for line in Path(f"/proc/{api.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for the API process")


async def _endless_header(url: str) -> bytes:
    """Send a head whose one header never ends, until the server answers or closes;
    return what it answered."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    answer = b""
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Endless: ")
        chunk = b"a" * 16 * 1024
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < _SENT_AT_MOST:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                with contextlib.suppress(TimeoutError):
                    answer += await asyncio.wait_for(reader.read(65536), 0.001)
                if answer or reader.at_eof():
                    break
        with contextlib.suppress(ConnectionError, TimeoutError):
            answer += await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return answer


async def test_an_endless_header_is_431_and_memory_stays_bounded(stack: Stack) -> None:
    assert (await raw_request(stack.url, "GET", b"/healthz")).status == 200
    before = _api_rss_bytes(stack)
    answers = await asyncio.gather(*(_endless_header(stack.url) for _ in range(20)))
    grown = _api_rss_bytes(stack) - before
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"headers are too large" in answer
    assert grown < 40 * 1024 * 1024, f"the API grew by {grown / 2**20:.0f} MiB"
    # The server still answers, large heads within the limit too, and bodies are no heads.
    await _large_heads_within_the_limit_and_bodies_of_any_size_are_served(stack)
    await _a_kept_connection_counts_each_head_afresh(stack)


async def test_too_many_headers_are_431(stack: Stack) -> None:
    headers = [(b"X-H%d" % n, b"v") for n in range(101)]
    reply = await raw_request(stack.url, "GET", b"/healthz", headers=headers)
    assert reply.status == 431
    assert b"at most 65536 bytes and 100 headers" in reply.body


async def _large_heads_within_the_limit_and_bodies_of_any_size_are_served(
    stack: Stack,
) -> None:
    headers = [(b"X-H%d" % n, b"v" * 500) for n in range(90)]  # ~45 KiB in 90 headers
    assert (await raw_request(stack.url, "GET", b"/healthz", headers=headers)).status == 200
    auth = [
        (b"Authorization", b"Bearer " + stack.admin_key.encode()),
        (b"Content-Type", b"application/json"),
    ]
    body = b'{"name": "m-big", "description": "%s"}' % (b"d" * 9_000)
    for _ in range(3):  # bodies far larger than a head, on fresh connections
        reply = await raw_request(stack.url, "POST", b"/v1/models", headers=auth, body=body)
        assert reply.status in (201, 409), reply.body


async def _a_kept_connection_counts_each_head_afresh(stack: Stack) -> None:
    """Bodies are not heads: many requests with large bodies on one kept connection."""
    headers = {
        "Authorization": f"Bearer {stack.admin_key}",
        "Content-Type": "application/json",
    }
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(5):
            body = b'{"name": "m", "description": "%s"}' % (b"d" * 900_000)
            async with http.post(f"{stack.url}/v1/models", data=body, headers=headers) as resp:
                assert resp.status == 422  # description too long: the body was read
            big_head = {f"X-H{n}": "v" * 500 for n in range(90)}
            async with http.get(f"{stack.url}/healthz", headers=big_head) as resp:
                assert resp.status == 200


def test_header_limits_too_small_to_serve_are_refused_as_settings() -> None:
    with pytest.raises(SettingsError, match="CLINAI_MAX_HEADER_BYTES"):
        Settings.from_env({"CLINAI_MAX_HEADER_BYTES": "100"})
    assert Settings.from_env({"CLINAI_MAX_HEADERS": "200"}).max_headers == 200
