"""The read side of webhooks: subscriptions, deliveries and attempts (API and notifier).

`db` is an asyncpg pool or connection on the live schema, as in `projections.queries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from projections.queries import MAX_LIMIT

__all__ = [
    "AttemptView",
    "DeliveryView",
    "WebhookView",
    "count_disabled_webhooks",
    "enabled_webhooks",
    "get_delivery",
    "get_webhook",
    "list_attempts",
    "list_deliveries",
    "list_webhooks",
    "owner_of",
    "pending_deliveries",
]


class WebhookView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    url: str
    events: list[str]
    description: str
    generation: int
    rotated_at: datetime | None
    previous_valid_until: datetime | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    deleted_at: datetime | None
    consecutive_failures: int
    failing_since: datetime | None
    last_delivery_at: datetime | None
    created_at: datetime
    updated_at: datetime
    created_seq: int
    last_seq: int


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    endpoint_id: str
    owner: str
    message_id: str
    event_type: str
    source_seq: int
    source_id: str
    resource_id: str
    url: str
    status: str  # queued | retrying | succeeded | failed
    attempts: int
    next_attempt_at: datetime | None
    horizon_from: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    last_seq: int


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    attempt: int
    endpoint_id: str
    outcome: str
    status_code: int | None
    latency_ms: float
    error: str | None
    next_attempt_at: datetime | None
    attempted_at: datetime
    seq: int


async def get_webhook(db: Any, webhook_id: str) -> WebhookView | None:
    """The subscription, deleted or not (check `deleted_at`)."""
    row = await db.fetchrow("SELECT * FROM webhooks WHERE id = $1", webhook_id)
    return None if row is None else WebhookView(**row)


async def list_webhooks(db: Any, owner: str | None) -> list[WebhookView]:
    """Subscriptions not deleted, of `owner` (everyone's when None), newest first."""
    rows = await db.fetch(
        "SELECT * FROM webhooks WHERE deleted_at IS NULL AND ($1::text IS NULL OR owner = $1) "
        "ORDER BY created_at DESC, id DESC",
        owner,
    )
    return [WebhookView(**r) for r in rows]


async def enabled_webhooks(db: Any, owner: str) -> list[WebhookView]:
    """`owner`'s enabled subscriptions (the notifier keeps them and matches each event's
    sequence against `created_seq` itself)."""
    rows = await db.fetch(
        "SELECT * FROM webhooks WHERE owner = $1 AND enabled AND deleted_at IS NULL", owner
    )
    return [WebhookView(**r) for r in rows]


async def get_delivery(db: Any, delivery_id: str) -> DeliveryView | None:
    row = await db.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
    return None if row is None else DeliveryView(**row)


async def list_deliveries(
    db: Any, endpoint_id: str, *, limit: int = 50, status: str | None = None
) -> list[DeliveryView]:
    """An endpoint's deliveries, newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")
    rows = await db.fetch(
        "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 "
        "AND ($3::text IS NULL OR status = $3) ORDER BY created_at DESC, id DESC LIMIT $2",
        endpoint_id,
        limit,
        status,
    )
    return [DeliveryView(**r) for r in rows]


async def list_attempts(db: Any, delivery_ids: list[str]) -> dict[str, list[AttemptView]]:
    """Every attempt of these deliveries, in order, by delivery id."""
    rows = await db.fetch(
        "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) "
        "ORDER BY delivery_id, attempt",
        delivery_ids,
    )
    out: dict[str, list[AttemptView]] = {d: [] for d in delivery_ids}
    for r in rows:
        out[r["delivery_id"]].append(AttemptView(**r))
    return out


async def pending_deliveries(db: Any) -> list[DeliveryView]:
    """Deliveries still to attempt, of job webhooks and of enabled subscriptions."""
    rows = await db.fetch(
        "SELECT d.* FROM webhook_deliveries d LEFT JOIN webhooks w ON w.id = d.endpoint_id "
        "WHERE d.status IN ('queued', 'retrying') "
        "AND (w.id IS NULL OR (w.enabled AND w.deleted_at IS NULL)) "
        "ORDER BY d.next_attempt_at NULLS FIRST"
    )
    return [DeliveryView(**r) for r in rows]


_OWNER_SQL = {
    "job": "SELECT owner FROM jobs WHERE id = $1",
    "version": "SELECT owner FROM versions WHERE id = $1",
    "model": "SELECT owner FROM models WHERE id = $1",
    "webhook": "SELECT owner FROM webhooks WHERE id = $1",
    "delivery": "SELECT owner FROM webhook_deliveries WHERE id = $1",
    "apikey": "SELECT user_id FROM api_keys WHERE id = $1",
    "user": "SELECT id FROM users WHERE id = $1",
}


async def owner_of(db: Any, aggregate: str, aggregate_id: str) -> str | None:
    """The user a resource belongs to (None when unknown to the read models)."""
    sql = _OWNER_SQL.get(aggregate)
    if sql is None:
        return None
    value = await db.fetchval(sql, aggregate_id)
    return None if value is None else str(value)


async def count_disabled_webhooks(db: Any) -> int:
    """Subscriptions disabled now (after failing too long) and not deleted."""
    value = await db.fetchval(
        "SELECT count(*) FROM webhooks WHERE NOT enabled AND deleted_at IS NULL"
    )
    return int(value or 0)
