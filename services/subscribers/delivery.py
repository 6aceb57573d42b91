"""What a subscriber's handler gets and may raise: the contract between the consumer
plumbing and the builder's, executor's and notifier's handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from events import AnyEvent, ClinaiError, Event, new_event_id

__all__ = ["Delivery", "Handler", "Poison", "RetryLater", "reaction_envelope"]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One delivered event: its stream sequence and how often it has been delivered."""

    event: AnyEvent
    seq: int
    num_delivered: int
    max_deliver: int

    @property
    def redelivered(self) -> bool:
        return self.num_delivered > 1

    @property
    def last_attempt(self) -> bool:
        """The server will not deliver this message again: decide for good now."""
        return self.num_delivered >= self.max_deliver


class RetryLater(ClinaiError):
    """The handler could not finish for a reason that may pass (infrastructure)."""

    def __init__(self, reason: str, *, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s


class Poison(ClinaiError):
    """The message can never be handled (permanently invalid): terminate it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Handler = Callable[[Delivery], Awaitable[None]]
Clock = Callable[[], datetime]


def reaction_envelope(
    cause: Event, *, actor: str, aggregate_id: str | None = None, clock: Clock | None = None
) -> dict[str, Any]:
    """The envelope of an event a service appends in reaction to `cause`: same
    correlation id, caused by it, a fresh event id (competing writers must not share
    ids, or JetStream's deduplication would let both "win")."""
    return {
        "id": new_event_id(),
        "aggregate_id": aggregate_id or cause.aggregate_id,
        "occurred_at": (clock or _utcnow)(),
        "actor": actor,
        "correlation_id": cause.correlation_id,
        "causation_id": cause.id,
    }


def _utcnow() -> datetime:
    return datetime.now(UTC)
