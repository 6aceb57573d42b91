"""What every aggregate's commands share: the event store, the injected clock, the
envelope of the events they append, and the append of a new aggregate's first event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from events import ConcurrencyConflictError, Event, EventStore, check_same_request
from services.domain.context import CommandContext, ConflictError

__all__ = ["MAX_RETRIES", "Clock", "CommandBase"]

Clock = Callable[[], datetime]

# How often a command decides again after another writer moved the aggregate on.
MAX_RETRIES = 5


class CommandBase:
    def __init__(self, store: EventStore, *, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def _envelope(self, ctx: CommandContext, purpose: str, aggregate_id: str) -> dict[str, Any]:
        return ctx.envelope(purpose, aggregate_id, self._clock())

    async def replays(self, ctx: CommandContext, aggregate: str, aggregate_id: str) -> bool:
        """Whether `aggregate_id` (its id derived from the command's Idempotency-Key)
        already exists from this same request: the command is then a retry, whose
        append replays. IdempotencyKeyReusedError when a different request under the
        key made it. Without a key: False, and nothing is read."""
        if ctx.idempotency_key is None:
            return False
        history = await self._store.read_aggregate(aggregate, aggregate_id)
        if not history.events:
            return False
        check_same_request(history.events[0].event, ctx.request_digest)
        return True

    async def _append_new(self, event: Event) -> int:
        """Append the first event of a new aggregate (expected sequence 0)."""
        try:
            return await self._store.append(event, expected=0)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"{event.aggregate} {event.aggregate_id} already exists",
                hint="use a new Idempotency-Key for a new request",
            ) from err
