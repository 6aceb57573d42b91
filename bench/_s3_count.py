"""The S3 requests a stack makes, counted on the wire: `S3Requests.watch` is given to
`bench._delay.delayed` (a proxy in front of the store), parses each connection's
requests with httptools and counts them by the process that sent them (`kind_of_port`
on the stack's process tree), by what they do and by the key's first folder."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

from bench._proc import kind_of_port

__all__ = ["S3Requests"]


class S3Requests:
    """Counts by (process kind, request), and the connections each kind opened. Set
    `root` to the stack's pid before it connects (connections before count as "other")."""

    def __init__(self) -> None:
        self.root: int | None = None
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._connections: Counter[str] = Counter()

    def watch(self, port: int) -> Callable[[bytes], None]:
        kind = kind_of_port(self.root, port) if self.root is not None else "other"
        with self._lock:
            self._connections[kind] += 1
        request = _Request(self, kind)
        parser = httptools.HttpRequestParser(request)
        request.parser = parser
        return parser.feed_data

    def count(self, kind: str, what: str) -> None:
        with self._lock:
            self._requests[kind, what] += 1

    def snapshot(self) -> tuple[Counter[tuple[str, str]], Counter[str]]:
        """(requests by kind and what, connections by kind) so far."""
        with self._lock:
            return Counter(self._requests), Counter(self._connections)


class _Request:
    """httptools' callbacks for one connection: one count per request."""

    def __init__(self, requests: S3Requests, kind: str) -> None:
        self.parser: httptools.HttpRequestParser | None = None
        self._requests = requests
        self._kind = kind
        self._url = b""
        self._copy = False

    def on_message_begin(self) -> None:
        self._url, self._copy = b"", False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-amz-copy-source":
            self._copy = True

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        method = self.parser.get_method().decode()
        self._requests.count(self._kind, describe(method, self._url.decode(), self._copy))


def describe(method: str, url: str, copy: bool) -> str:
    """`PUT outputs`, `GET inputs`, `COPY inputs`, `POST .incoming ?uploads`, ...: the
    method (COPY for a PUT with a copy source), the key's first folder (two for logs),
    and the S3 sub-resource that makes it another operation (path-style URLs)."""
    parts = urlsplit(url)
    key = unquote(parts.path).lstrip("/").split("/", 1)[1:]  # after the bucket
    folders = key[0].split("/") if key and key[0] else []
    where = "/".join(folders[:2] if folders[:1] == ["logs"] else folders[:1]) or "(bucket)"
    query = parse_qs(parts.query, keep_blank_values=True)
    op = next(
        (
            f" ?{name}"
            for name in ("uploads", "partNumber", "uploadId", "list-type")
            if name in query
        ),
        "",
    )
    return f"{'COPY' if copy else method} {where}{op}"
