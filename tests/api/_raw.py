"""Requests sent byte for byte: a path, headers and a body exactly as given (aiohttp
normalises paths and refuses bad headers, which is what these tests must send)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import msgspec

__all__ = ["RawReply", "raw_request"]


class RawReply(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return msgspec.json.decode(self.body)


async def raw_request(
    base_url: str,
    method: str,
    target: bytes,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> RawReply:
    """One request on its own connection (Connection: close); the reply read to EOF."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: test"]
        head += [name + b": " + value for name, value in headers or []]
        head += [b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
        writer.write(b"\r\n".join(head) + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head_raw, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    reply_headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    return RawReply(status=status, headers=reply_headers, body=rest)
