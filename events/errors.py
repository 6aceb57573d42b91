"""The project's error base, and the event store's error tree under it: a subclass per
decision a caller makes.

`ClinaiError` lives here because `events` is the lowest layer: it imports nothing of the
project, and `projections` and `services` all import it (`runner`, which runs inside the
sandbox with the standard library only, keeps its own)."""

from __future__ import annotations

__all__ = [
    "ClinaiError",
    "ConcurrencyConflictError",
    "EventStoreError",
    "EventTooLargeError",
    "IdempotencyKeyReusedError",
    "ServerTooOldError",
    "StreamUnavailableError",
    "UndecodableEventError",
    "UnstorableTextError",
]


class ClinaiError(Exception):
    """Base of every ClinAI error: `message` says what happened, `hint` what to do next.
    Subclasses are the decisions a caller makes and carry their data as attributes."""

    def __init__(self, message: str = "", *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class EventStoreError(ClinaiError):
    """Base of every event-store error."""


class ConcurrencyConflictError(EventStoreError):
    """Another writer appended to the aggregate since its state was read."""

    def __init__(self, subject_filter: str, expected: int, *, actual: int | None = None) -> None:
        super().__init__(
            f"{subject_filter} changed concurrently (expected last sequence {expected})",
            hint="re-read the resource and retry the command",
        )
        self.subject_filter = subject_filter
        self.expected = expected
        self.actual = actual


class StreamUnavailableError(EventStoreError):
    """The NATS server or the JetStream stream could not be reached in time."""


class ServerTooOldError(EventStoreError):
    """The NATS server is older than the minimum version ClinAI needs."""


class EventTooLargeError(EventStoreError):
    """An event's encoded message is larger than the server accepts (its `max_payload`):
    it was not appended. Nothing is retried: the same event never fits."""

    def __init__(self, event_type: str, aggregate_id: str, size: int, limit: int) -> None:
        super().__init__(
            f"{event_type} of {aggregate_id} is {size} bytes, more than the event log "
            f"accepts ({limit} bytes per message)",
            hint="store large payloads in the blob store and record their key (claim check)",
        )
        self.event_type = event_type
        self.aggregate_id = aggregate_id
        self.size = size
        self.limit = limit


class UnstorableTextError(EventStoreError):
    """An event holds text the read models cannot store (a NUL character or a lone
    surrogate), or an integer outside the 64-bit range: it is refused before it reaches
    the log. `where` names the field."""

    def __init__(self, event_type: str, where: str) -> None:
        super().__init__(
            f"{event_type}: {where}, which cannot be stored",
            hint="remove the NUL character or lone surrogate, or send the integer as a string",
        )
        self.event_type = event_type
        self.where = where


class UndecodableEventError(EventStoreError):
    """A stored message at `seq` is not an event this version can decode (a hand-made
    append, a schema this version does not know). Readers raise it after handing over
    every event before it, so a caller can record it and read on from `seq + 1`."""

    def __init__(self, seq: int, subject: str, reason: str) -> None:
        super().__init__(
            f"the message at sequence {seq} ({subject}) is not an event: {reason}",
            hint="read on from the next sequence, or upgrade to a version that knows it",
        )
        self.seq = seq
        self.subject = subject
        self.reason = reason


class IdempotencyKeyReusedError(EventStoreError):
    """An Idempotency-Key came again with a different request than the one that created
    `aggregate` `aggregate_id` (their request digests differ): nothing was appended."""

    def __init__(self, aggregate: str, aggregate_id: str) -> None:
        super().__init__(
            f"this Idempotency-Key was already used for a different request, which "
            f"created {aggregate} {aggregate_id}",
            hint="use a new Idempotency-Key for a new request; send the same request "
            "again to get the first answer",
        )
        self.aggregate = aggregate
        self.aggregate_id = aggregate_id
