"""What every command carries (who asks, correlation, idempotency) and the errors a
command raises, one per decision a caller makes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from events import ClinaiError, event_id_for_key, new_event_id, new_id

__all__ = [
    "CommandContext",
    "CommandError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
]


class CommandError(ClinaiError):
    """Base of the command errors; `hint` says what the caller can do."""


class NotFoundError(CommandError):
    pass


class ConflictError(CommandError):
    pass


class ForbiddenError(CommandError):
    pass


class CommandContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who asks, the request's correlation id and the client's Idempotency-Key."""

    actor: str
    is_admin: bool = False
    correlation_id: str
    causation_id: str | None = None
    idempotency_key: str | None = None
    # Under a key: the digest of what the request asks (see `events.idempotency`).
    request_digest: str | None = None

    def event_id(self, purpose: str) -> str:
        if self.idempotency_key is None:
            return new_event_id()
        return event_id_for_key(self.actor, self.idempotency_key, purpose)

    def envelope(self, purpose: str, aggregate_id: str, occurred_at: datetime) -> dict[str, Any]:
        """The envelope fields of an event this command appends (`purpose` tells the
        command's events apart for the idempotency mapping)."""
        return {
            "id": self.event_id(purpose),
            "aggregate_id": aggregate_id,
            "occurred_at": occurred_at,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }

    def resource_id(self, prefix: str) -> str:
        """A new resource id; deterministic under an Idempotency-Key so a retried
        command addresses the same aggregate and is deduplicated."""
        if self.idempotency_key is None:
            return new_id(prefix)
        digest = event_id_for_key(self.actor, self.idempotency_key, f"id:{prefix}")
        return f"{prefix}_{digest.replace('-', '')[:26]}"
