"""uvicorn's httptools protocol with a bound on a request's head (request line and
headers): its size and its number of headers.

uvicorn's own limit (`h11_max_incomplete_event_size`) applies to h11 only. With
httptools nothing bounds a head: the parser keeps an unfinished header value in memory
(growing it with every chunk), so a client that sends an endless header holds as much
of the server's memory as it likes. Here, once more than `max_head_bytes` have arrived
for a head still unfinished, or it has more than `max_headers` headers, the request is
answered 431 and the connection closed.

Bytes are counted per chunk received while a head is unfinished, not counting the
chunk in which the head began (after a kept connection's previous request, a head
begins in the middle of one): a connection holds at most `max_head_bytes` plus two
reads of the transport.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from events import ClinaiError

__all__ = ["bounded_httptools"]


class _HeadTooLargeError(ClinaiError):
    pass


class _BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    max_headers = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # the connection starts with a head
        self._head_began_in_chunk = False
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_began_in_chunk = False
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._head_open and not self._head_began_in_chunk:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_began_in_chunk = True
        self._head_bytes = 0
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            raise _HeadTooLargeError  # stops the parser; see send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request's head, if the connection is kept, begins in this chunk.
        self._head_open = True
        self._head_began_in_chunk = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers 400 to a parser error, and so to `_HeadTooLargeError`
        raised in a callback: that one is a 431."""
        if self._header_count > self.max_headers:
            self._refuse()
            return
        super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        detail = (
            f"the request's headers are too large (at most {self.max_head_bytes} bytes "
            f"and {self.max_headers} headers); send fewer or smaller headers"
        )
        body = (
            '{"type":"about:blank","title":"Request header fields too large","status":431,'
            f'"detail":"{detail}"}}'
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/problem+json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def bounded_httptools(max_head_bytes: int, max_headers: int) -> type[HttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these bounds."""
    if max_head_bytes < 1024 or max_headers < 8:
        raise ValueError("a request head needs at least 1024 bytes and 8 headers")
    return type(
        "BoundedHttpToolsProtocol",
        (_BoundedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "max_headers": max_headers},
    )
