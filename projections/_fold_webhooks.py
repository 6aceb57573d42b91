"""The fold of webhook and delivery events onto the webhooks, webhook_deliveries and
webhook_attempts rows (part of `projections.apply.fold`)."""

from __future__ import annotations

from typing import Any, Final

from events import (
    AnyEvent,
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

__all__ = ["WEBHOOK_EVENTS", "WEBHOOK_TARGETS", "extra_loads", "fold_webhook_event"]

Row = dict[str, Any]
Tables = dict[str, dict[Any, Row]]

WEBHOOK_EVENTS: Final = (
    WebhookCreated,
    WebhookUpdated,
    WebhookSecretRotated,
    WebhookDisabled,
    WebhookEnabled,
    WebhookDeleted,
    WebhookDeliveryQueued,
    WebhookDeliveryAttempted,
    WebhookRedeliveryRequested,
)

# Event type -> (table of its aggregate's row, creates the row).
WEBHOOK_TARGETS: Final[dict[type[AnyEvent], tuple[str, bool]]] = {
    WebhookCreated: ("webhooks", True),
    WebhookUpdated: ("webhooks", False),
    WebhookSecretRotated: ("webhooks", False),
    WebhookDisabled: ("webhooks", False),
    WebhookEnabled: ("webhooks", False),
    WebhookDeleted: ("webhooks", False),
    WebhookDeliveryQueued: ("webhook_deliveries", True),
    WebhookDeliveryAttempted: ("webhook_deliveries", False),
    WebhookRedeliveryRequested: ("webhook_deliveries", False),
}


def extra_loads(event: AnyEvent) -> tuple[tuple[str, str], ...]:
    """Rows besides its aggregate's that an event updates: an attempt updates its
    endpoint's failure streak."""
    if isinstance(event, WebhookDeliveryAttempted):
        return (("webhooks", event.endpoint_id),)
    return ()


def fold_webhook_event(stored: StoredEvent, tables: Tables, touched: set[tuple[str, Any]]) -> None:
    seq, event = stored.seq, stored.event
    at, rid = event.occurred_at, event.aggregate_id
    hooks = tables.setdefault("webhooks", {})
    deliveries = tables.setdefault("webhook_deliveries", {})
    match event:
        case WebhookCreated():
            hooks[rid] = {
                "id": rid,
                "owner": event.owner,
                "url": event.url,
                "events": list(event.events),
                "description": event.description,
                "generation": event.generation,
                "rotated_at": None,
                "previous_valid_until": None,
                "enabled": True,
                "disabled_reason": None,
                "disabled_at": None,
                "deleted_at": None,
                "consecutive_failures": 0,
                "failing_since": None,
                "last_delivery_at": None,
                "created_at": at,
                "updated_at": at,
                "created_seq": seq,
                "last_seq": seq,
            }
            touched.add(("webhooks", rid))
            return
        case WebhookDeliveryQueued():
            deliveries[rid] = {
                "id": rid,
                "endpoint_id": event.endpoint_id,
                "owner": event.owner,
                "message_id": event.message_id,
                "event_type": event.event_type,
                "source_seq": event.source_seq,
                "source_id": event.source_id,
                "resource_id": event.resource_id,
                "url": event.url,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": None,
                "horizon_from": at,
                "last_status_code": None,
                "last_error": None,
                "created_at": at,
                "updated_at": at,
                "last_seq": seq,
            }
            touched.add(("webhook_deliveries", rid))
            return
        case WebhookDeliveryAttempted() | WebhookRedeliveryRequested():
            _fold_delivery(stored, event, tables, touched)
            return
        case (
            WebhookUpdated()
            | WebhookSecretRotated()
            | WebhookDisabled()
            | WebhookEnabled()
            | WebhookDeleted()
        ):
            if (row := hooks.get(rid)) is None:
                return
            _fold_webhook(event, row, at)
            row["updated_at"] = at
            row["last_seq"] = seq
            touched.add(("webhooks", rid))


def _fold_webhook(event: AnyEvent, row: Row, at: Any) -> None:
    match event:
        case WebhookUpdated():
            if event.url is not None:
                row["url"] = event.url
            if event.events is not None:
                row["events"] = list(event.events)
            if event.description is not None:
                row["description"] = event.description
        case WebhookSecretRotated():
            row["generation"] = event.generation
            row["rotated_at"] = at
            row["previous_valid_until"] = event.previous_valid_until
        case WebhookDisabled():
            row["enabled"] = False
            row["disabled_reason"] = event.reason
            row["disabled_at"] = at
        case WebhookEnabled():
            row["enabled"] = True
            row["disabled_reason"] = None
            row["disabled_at"] = None
            row["consecutive_failures"] = 0
            row["failing_since"] = None
        case WebhookDeleted():
            if row["deleted_at"] is None:
                row["deleted_at"] = at


def _fold_delivery(
    stored: StoredEvent,
    event: WebhookDeliveryAttempted | WebhookRedeliveryRequested,
    tables: Tables,
    touched: set[tuple[str, Any]],
) -> None:
    seq, at, rid = stored.seq, event.occurred_at, event.aggregate_id
    row = tables.setdefault("webhook_deliveries", {}).get(rid)
    if row is None:
        return
    row["updated_at"] = at
    row["last_seq"] = seq
    touched.add(("webhook_deliveries", rid))
    if isinstance(event, WebhookRedeliveryRequested):
        row["status"] = "queued"
        row["next_attempt_at"] = None
        row["horizon_from"] = at
        return
    row["status"] = event.outcome
    row["attempts"] = max(row["attempts"], event.attempt)
    row["next_attempt_at"] = event.next_attempt_at
    row["last_status_code"] = event.status_code
    row["last_error"] = event.error
    key = (rid, event.attempt)
    tables.setdefault("webhook_attempts", {})[key] = {
        "delivery_id": rid,
        "attempt": event.attempt,
        "endpoint_id": event.endpoint_id,
        "outcome": event.outcome,
        "status_code": event.status_code,
        "latency_ms": event.latency_ms,
        "error": event.error,
        "next_attempt_at": event.next_attempt_at,
        "attempted_at": at,
        "seq": seq,
    }
    touched.add(("webhook_attempts", key))
    hook = tables.setdefault("webhooks", {}).get(event.endpoint_id)
    if hook is None:
        return
    hook["last_delivery_at"] = at
    if event.outcome == "succeeded":
        hook["consecutive_failures"] = 0
        hook["failing_since"] = None
    else:
        hook["consecutive_failures"] += 1
        if hook["failing_since"] is None:
            hook["failing_since"] = at
    touched.add(("webhooks", event.endpoint_id))
