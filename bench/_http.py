"""A lean HTTP/1.1 keep-alive client on asyncio and httptools, for the benchmarks.

The benchmarks' client shares the machine with the stack it measures, so it should cost
as little CPU as it can, the way wrk does: one request at a time per connection, idle
connections kept for the next request, the response parsed by httptools (llhttp, in C)
and nothing else done per request. Bodies are bytes built by the caller (`multipart`
builds a form once, to send many times). Responses must carry a Content-Length or be
chunked; HEAD is not supported.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

__all__ = ["HttpClient", "Response", "multipart"]


class Response:
    """A complete response: its status and its (de-chunked) body."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received = False  # any byte of the current response
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None
        self._target = ""

    def send(self, target: str, data: bytes) -> asyncio.Future[Response]:
        if self.transport is None or self._waiter is not None:
            raise RuntimeError("a connection sends one request at a time, once connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._target, self.received = target, False
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RuntimeError(f"bad response to {self._target}: {exc}"))
            self.close()

    def on_body(self, body: bytes) -> None:  # httptools callback, de-chunked
        self._body.append(body)

    def on_message_complete(self) -> None:  # httptools callback
        response = Response(self._parser.get_status_code(), b"".join(self._body))
        self._body.clear()
        if not self._parser.should_keep_alive():
            self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection closed before the response to {self._target}"))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class HttpClient:
    """Requests to one http:// origin over a pool of keep-alive connections (as many as
    there are concurrent requests). `headers` are sent with every request."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"not an http:// URL: {url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/")
        host = parts.netloc.rsplit("@", 1)[-1]
        self._head_tail = _header_lines({"Host": host, **(headers or {})})
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send `method` `target` (a path with its query) and return the whole response."""
        if method == "HEAD":
            raise ValueError("HEAD is not supported")
        target = self._prefix + target
        head = (
            f"{method} {target} HTTP/1.1\r\n{self._head_tail}"
            f"{_header_lines(headers) if headers else ''}Content-Length: {len(body)}\r\n\r\n"
        )
        data = head.encode("latin-1") + body
        while True:
            conn, reused = await self._connection()
            try:
                response = await conn.send(target, data)
            except ConnectionError:
                conn.close()
                # An idle connection the server closed as it was being reused: the request
                # was not read, so send it again on another one.
                if reused and not conn.received:
                    continue
                raise
            except BaseException:
                conn.close()  # cancelled or failed mid-response: its state is unknown
                raise
            if not conn.closed:
                self._idle.append(conn)
            return response

    async def _connection(self) -> tuple[_Connection, bool]:
        """An idle connection (and True), else a new one (and False)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn, False

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        await asyncio.sleep(0)  # let the transports close

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _header_lines(headers: Mapping[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def multipart(
    fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]
) -> tuple[str, bytes]:
    """A multipart/form-data body of `fields` (name: value) and `files` (name: (filename,
    content, content type)), and the Content-Type header value that goes with it."""
    boundary = uuid.uuid4().hex
    while any(boundary.encode() in content for _, content, _ in files.values()):
        boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        disposition = f'form-data; name="{_quote(name)}"'
        parts += [_part_head(boundary, disposition, None), value.encode(), b"\r\n"]
    for name, (filename, content, content_type) in files.items():
        disposition = f'form-data; name="{_quote(name)}"; filename="{_quote(filename)}"'
        parts += [_part_head(boundary, disposition, content_type), content, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def _part_head(boundary: str, disposition: str, content_type: str | None) -> bytes:
    kind = f"Content-Type: {content_type}\r\n" if content_type else ""
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode()


def _quote(name: str) -> str:
    """As browsers escape a form field's name or file name (WHATWG HTML)."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
