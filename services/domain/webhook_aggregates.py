"""Webhook and delivery state folded from their own events in the log (writers decide
from these, never from projections)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from events import (
    StoredEvent,
    WebhookCreated,
    WebhookDeleted,
    WebhookDeliveryAttempted,
    WebhookDeliveryQueued,
    WebhookDisabled,
    WebhookEnabled,
    WebhookRedeliveryRequested,
    WebhookSecretRotated,
    WebhookUpdated,
)

__all__ = ["DeliveryState", "WebhookState", "fold_delivery", "fold_webhook"]


class WebhookState(msgspec.Struct, kw_only=True):
    webhook_id: str
    owner: str
    url: str
    events: tuple[str, ...]
    description: str
    generation: int
    previous_valid_until: datetime | None = None
    enabled: bool = True
    deleted: bool = False
    last_seq: int = 0


class DeliveryState(msgspec.Struct, kw_only=True):
    queued: WebhookDeliveryQueued
    attempts: int = 0
    status: str = "queued"  # queued | retrying | succeeded | failed
    next_attempt_at: datetime | None = None
    horizon_from: datetime
    last_seq: int = 0


def fold_webhook(events: Sequence[StoredEvent]) -> WebhookState | None:
    state: WebhookState | None = None
    for stored in events:
        match stored.event:
            case WebhookCreated() as e:
                state = WebhookState(
                    webhook_id=e.aggregate_id,
                    owner=e.owner,
                    url=e.url,
                    events=e.events,
                    description=e.description,
                    generation=e.generation,
                )
            case WebhookUpdated() as e if state is not None:
                state.url = e.url if e.url is not None else state.url
                state.events = e.events if e.events is not None else state.events
                if e.description is not None:
                    state.description = e.description
            case WebhookSecretRotated() as e if state is not None:
                state.generation = e.generation
                state.previous_valid_until = e.previous_valid_until
            case WebhookDisabled() if state is not None:
                state.enabled = False
            case WebhookEnabled() if state is not None:
                state.enabled = True
            case WebhookDeleted() if state is not None:
                state.deleted = True
        if state is not None:
            state.last_seq = stored.seq
    return state


def fold_delivery(events: Sequence[StoredEvent]) -> DeliveryState | None:
    state: DeliveryState | None = None
    for stored in events:
        match stored.event:
            case WebhookDeliveryQueued() as e:
                state = DeliveryState(queued=e, horizon_from=e.occurred_at)
            case WebhookDeliveryAttempted() as e if state is not None:
                state.attempts = max(state.attempts, e.attempt)
                state.status = e.outcome
                state.next_attempt_at = e.next_attempt_at
            case WebhookRedeliveryRequested() as e if state is not None:
                state.status = "queued"
                state.next_attempt_at = None
                state.horizon_from = e.occurred_at
        if state is not None:
            state.last_seq = stored.seq
    return state
