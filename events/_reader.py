"""A lean bulk reader for replaying the stream: an ordered-style push consumer on a
connection of its own, parsed with the least work per message.

nats-py spends most of a replay's time per message (protocol regexes, header parsing,
`Msg` objects, ordered-consumer bookkeeping). This reader speaks just enough of the NATS
protocol to create an ephemeral push consumer (no acks, flow control, memory storage),
take each message's stream and delivery sequences and pending count from its reply
subject (`$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>`), never parse
its headers, and decode its payload as the bytes arrive (while the caller awaits
Postgres). It reads the log only up to its tail (pending 0): `EventStore.read_batches`
hands over to nats-py's ordered consumer for what comes after, from the next sequence.
A gap in delivery sequences, a lost connection or a silent server ends it early, and
the caller carries on from the next sequence the same way.

It connects with what the nats-py client was given (its current server, user/password
or token, TLS); when that is not enough (nkeys, JWTs, websockets) `open_bulk_reader`
returns None and the caller reads through nats-py instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final, cast
from urllib.parse import ParseResult

import msgspec
import orjson
from nats.aio.client import Client as NATS

from events._stored import StoredEvent
from events.codec import decode_event
from events.errors import ClinaiError, UndecodableEventError

__all__ = ["BulkReader", "open_bulk_reader"]

_CRLF: Final = b"\r\n"
_STATUS_AT: Final = len(b"NATS/1.0")  # a space here starts an inline status
_STALLED: Final = b"\r\nNats-Consumer-Stalled: "
_DELIVER_SID: Final = b"1"
_API_SID: Final = b"2"
_HEARTBEAT_NS: Final = 5_000_000_000


class _ReaderGone(ClinaiError):
    """The bulk reader cannot go on; the caller falls back to nats-py."""


class _Protocol(asyncio.Protocol):
    """Parses the server's bytes as they arrive; decoded events pile up in `ready`."""

    def __init__(self, buffer: int) -> None:
        self.ready: list[StoredEvent] = []
        self.transport: asyncio.Transport | None = None
        self.caught_up = False
        self.failure: BaseException | None = None
        self.wakeup = asyncio.Event()
        self.api_reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = buffer  # hold flow-control replies while this many wait
        self._held: list[bytes] = []  # flow-control replies held back
        self._dseq = 0  # the last delivery sequence seen
        self._lines: asyncio.Queue[bytes] = asyncio.Queue()
        self._handshaking = True
        self._buf = b""

    # --- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(_ReaderGone(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        try:
            pos = self._parse(buf)
        except BaseException as err:  # a bad event or a protocol error: stop here
            self._buf = b""
            self._fail(err)
            if self.transport is not None:
                self.transport.close()
            return
        self._buf = buf[pos:]

    # --- parsing --------------------------------------------------------------------------

    def _parse(self, buf: bytes) -> int:
        pos = 0
        size = len(buf)
        count = len(self.ready)
        while True:
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                break
            if buf.startswith(b"HMSG ", pos):  # subject, sid, [reply], header size, size
                args = buf[pos + 5 : eol].split()
                header_len, start = int(args[-2]), eol + 2
                end = start + int(args[-1])
                if end + 2 > size:
                    break
                if buf[start + _STATUS_AT] == 0x20:  # "NATS/1.0 100 ...": a control message
                    self._control(args, buf[start : start + header_len])
                else:
                    self._message(args[0], args[2], buf[start + header_len : end])
                pos = end + 2
            elif buf.startswith(b"MSG ", pos):  # subject, sid, [reply], size
                args = buf[pos + 4 : eol].split()
                start = eol + 2
                end = start + int(args[-1])
                if end + 2 > size:
                    break
                if args[1] == _API_SID:
                    if not self.api_reply.done():
                        self.api_reply.set_result(buf[start:end])
                elif len(args) == 4:  # a message stored without headers
                    self._message(args[0], args[2], buf[start:end])
                pos = end + 2
            elif self._handshaking:
                self._lines.put_nowait(buf[pos:eol])
                pos = eol + 2
            elif buf.startswith(b"PING", pos):
                self._write(b"PONG\r\n")
                pos = eol + 2
            elif buf.startswith(b"-ERR", pos):
                raise _ReaderGone(buf[pos:eol].decode(errors="replace"))
            else:  # +OK, PONG, INFO
                pos = eol + 2
        if len(self.ready) != count:
            self.wakeup.set()
        return pos

    def _message(self, subject: bytes, reply: bytes, payload: bytes) -> None:
        """One delivered message: `$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>`."""
        ack = reply.split(b".")
        if len(ack) != 9 or ack[0] != b"$JS":
            raise _ReaderGone(f"unexpected reply subject {reply[:80]!r}")
        dseq = int(ack[6])
        if dseq != self._dseq + 1:  # a gap: the caller resumes after the last one taken
            raise _ReaderGone(f"delivery sequence {dseq} after {self._dseq}")
        self._dseq = dseq
        seq = int(ack[5])
        try:
            event = decode_event(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            # It stops the reader: `batches` hands over the events before it, then raises.
            raise UndecodableEventError(seq, subject.decode(errors="replace"), str(err)) from err
        self.ready.append(StoredEvent(seq, event))
        if ack[8] == b"0":
            self.caught_up = True

    def _control(self, args: list[bytes], header: bytes) -> None:
        code = header[_STATUS_AT + 1 : _STATUS_AT + 4]
        if code != b"100":
            raise _ReaderGone(f"status {header[: header.find(_CRLF)]!r}")
        if len(args) == 5:  # a flow-control request: reply when the caller keeps up
            self._held.append(args[2])
        else:  # an idle heartbeat; a stalled consumer names the reply it waits for
            i = header.find(_STALLED)
            if i >= 0:
                i += len(_STALLED)
                self._held.append(header[i : header.find(b"\r", i)])
        self.release()

    def release(self) -> None:
        """Answer the flow-control requests held back once the caller has room."""
        if self._held and len(self.ready) < self._buffer:
            for reply in self._held:
                self._write(b"PUB %s 0\r\n\r\n" % reply)
            self._held.clear()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, err: BaseException) -> None:
        if self.failure is None:
            self.failure = err
        self._lines.put_nowait(b"")
        if not self.api_reply.done():
            self.api_reply.set_exception(_ReaderGone("connection lost"))
        self.wakeup.set()

    # --- handshake ------------------------------------------------------------------------

    async def line(self, timeout: float) -> bytes:
        line = await asyncio.wait_for(self._lines.get(), timeout)
        if self.failure is not None:
            raise _ReaderGone("the server closed the connection") from self.failure
        return line

    def handshaken(self) -> None:
        self._handshaking = False
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self._lines.get_nowait()


class BulkReader:
    """Construct with `await open_bulk_reader(nc, stream)`; `close()` when done."""

    def __init__(self, protocol: _Protocol, stream: str, timeout: float) -> None:
        self._p = protocol
        self._stream = stream
        self._timeout = timeout

    async def batches(self, start_seq: int, *, max_batch: int) -> AsyncIterator[list[StoredEvent]]:
        """Lists of `max_batch` events (the last one may be shorter), in order, from
        `start_seq` up to the stream's tail as it was when the last one was delivered.
        Stops early (without raising) when the reader cannot go on: the caller carries
        on from the next sequence another way. A message that does not decode raises
        UndecodableEventError, after the events before it."""
        p = self._p
        if not await self._subscribe(start_seq):
            return
        while True:
            if len(p.ready) < max_batch:  # a full batch unless the reader is done
                if p.ready and (p.caught_up or p.failure is not None):
                    taken = p.ready[:]
                    p.ready.clear()
                    yield taken
                    continue
                if p.failure is not None:
                    if isinstance(p.failure, _ReaderGone):
                        return
                    raise p.failure
                if p.caught_up:
                    return
                p.wakeup.clear()
                try:
                    await asyncio.wait_for(p.wakeup.wait(), self._timeout)
                except TimeoutError:
                    return
                continue
            taken = p.ready[:max_batch]
            del p.ready[:max_batch]
            p.release()
            yield taken

    async def _subscribe(self, start_seq: int) -> bool:
        """Create the consumer; False when there is nothing to read or it failed."""
        p = self._p
        deliver = f"_INBOX.clinai_replay.{secrets.token_hex(8)}"
        api_inbox = f"{deliver}.api"
        request = orjson.dumps(
            {
                "stream_name": self._stream,
                "config": {
                    "deliver_policy": "by_start_sequence",
                    "opt_start_seq": start_seq,
                    "ack_policy": "none",
                    "max_deliver": 1,
                    "replay_policy": "instant",
                    "deliver_subject": deliver,
                    "flow_control": True,
                    "idle_heartbeat": _HEARTBEAT_NS,
                    "mem_storage": True,
                    "num_replicas": 1,
                    "inactive_threshold": _HEARTBEAT_NS,
                },
            }
        )
        subject = f"$JS.API.CONSUMER.CREATE.{self._stream}"
        p._write(
            b"SUB %s %s\r\nSUB %s %s\r\nPUB %s %s %d\r\n%s\r\n"
            % (
                deliver.encode(),
                _DELIVER_SID,
                api_inbox.encode(),
                _API_SID,
                subject.encode(),
                api_inbox.encode(),
                len(request),
                request,
            )
        )
        try:
            reply = orjson.loads(await asyncio.wait_for(p.api_reply, self._timeout))
        except (TimeoutError, _ReaderGone, orjson.JSONDecodeError):
            # An event that failed to decode before the reply was read is the caller's.
            return p.failure is not None and not isinstance(p.failure, _ReaderGone)
        if not isinstance(reply, dict) or "error" in reply:
            return False
        if int(reply.get("num_pending", 0)) == 0 and not p.ready:
            p.caught_up = True
        return True

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()


async def open_bulk_reader(
    nc: NATS, stream: str, *, buffer: int = 20_000, timeout: float = 5.0
) -> BulkReader | None:
    """A bulk reader on the server `nc` is connected to, or None when this reader cannot
    connect the way `nc` did (the caller then reads through nats-py). The server stops
    sending (flow control) while about `buffer` events wait for the caller."""
    url = nc.connected_url
    if url is None or url.scheme not in ("nats", "tls") or url.hostname is None:
        return None
    options: dict[str, Any] = nc.options
    loop = asyncio.get_running_loop()
    protocol = _Protocol(buffer)
    tls: ssl.SSLContext | None = options.get("tls")
    if tls is None and url.scheme == "tls":
        tls = ssl.create_default_context()
    try:
        if options.get("tls_handshake_first") and tls is not None:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: protocol,
                    url.hostname,
                    url.port or 4222,
                    ssl=tls,
                    server_hostname=options.get("tls_hostname") or url.hostname,
                ),
                timeout,
            )
            tls = None
        else:
            await asyncio.wait_for(
                loop.create_connection(lambda: protocol, url.hostname, url.port or 4222),
                timeout,
            )
        reader = await _handshake(protocol, url, options, tls, stream, timeout)
    except (OSError, TimeoutError, ssl.SSLError, _ReaderGone, ValueError):
        if protocol.transport is not None:
            protocol.transport.close()
        return None
    except BaseException:  # cancelled: do not leave the socket behind
        if protocol.transport is not None:
            protocol.transport.close()
        raise
    return reader


async def _handshake(
    protocol: _Protocol,
    url: ParseResult,
    options: dict[str, Any],
    tls: ssl.SSLContext | None,
    stream: str,
    timeout: float,
) -> BulkReader:
    line = await protocol.line(timeout)
    if not line.startswith(b"INFO "):
        raise _ReaderGone(f"expected INFO, got {line[:40]!r}")
    info = orjson.loads(line[5:])
    if not info.get("headers"):
        raise _ReaderGone("the server does not support headers")
    if info.get("tls_required") or (tls is not None and info.get("tls_available")):
        if protocol.transport is None:
            raise _ReaderGone("not connected")
        loop = asyncio.get_running_loop()
        transport = await asyncio.wait_for(
            loop.start_tls(
                protocol.transport,
                protocol,
                tls or ssl.create_default_context(),
                server_hostname=options.get("tls_hostname") or url.hostname,
            ),
            timeout,
        )
        if transport is None:  # pragma: no cover - only when the connection went
            raise _ReaderGone("TLS upgrade failed")
        protocol.transport = transport
    connect: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "lang": "python3-clinai-replay",
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        "echo": False,
    }
    if info.get("auth_required"):
        user = url.username or options.get("user")
        password = url.password or options.get("password")
        token = options.get("token") or (url.username if url.password is None else None)
        if info.get("nonce") and not (user and password) and not token:
            raise _ReaderGone("nonce-signed auth (nkeys/JWT): not supported here")
        if user and password and not callable(user) and not callable(password):
            connect["user"], connect["pass"] = user, password
        elif token and not callable(token):
            connect["auth_token"] = token
        else:
            raise _ReaderGone("no usable credentials")
    if protocol.transport is None:
        raise _ReaderGone("not connected")
    protocol.transport.write(b"CONNECT %s\r\nPING\r\n" % orjson.dumps(connect))
    while True:
        line = await protocol.line(timeout)
        if line.startswith(b"PONG"):
            break
        if line.startswith(b"-ERR"):
            raise _ReaderGone(line.decode(errors="replace"))
    protocol.handshaken()
    return BulkReader(protocol, stream, timeout)
