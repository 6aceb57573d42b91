"""The event store's error tree: one base, a subclass per decision a caller makes."""

from __future__ import annotations

__all__ = [
    "ConcurrencyConflictError",
    "EventStoreError",
    "ServerTooOldError",
    "StreamUnavailableError",
    "UnstorableTextError",
]


class EventStoreError(Exception):
    """Base of every event-store error. `hint` says what to do next."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


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


class UnstorableTextError(EventStoreError):
    """An event holds text the read models cannot store (a NUL character or a lone
    surrogate): it is refused before it reaches the log. `where` names the field."""

    def __init__(self, event_type: str, where: str) -> None:
        super().__init__(
            f"{event_type}: {where}, which cannot be stored",
            hint="remove the NUL character or lone surrogate from that text",
        )
        self.event_type = event_type
        self.where = where
