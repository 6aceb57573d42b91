"""The write side of webhooks: subscriptions (create, update, delete, rotate the secret,
re-enable) and manual redelivery. Each command decides from the aggregate's own events
and appends with the sequence it decided from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from events import (
    ConcurrencyConflictError,
    EventStore,
    WebhookCreated,
    WebhookDeleted,
    WebhookEnabled,
    WebhookRedeliveryRequested,
    WebhookSecretRotated,
    WebhookUpdated,
)
from services.domain.access import can_see_webhook
from services.domain.context import CommandContext, CommandError, ConflictError, NotFoundError
from services.domain.destinations import (
    DestinationPolicy,
    DestinationRefused,
    InvalidDestination,
)
from services.domain.event_types import InvalidFilterError, check_filter
from services.domain.signing import derive_secret
from services.domain.webhook_aggregates import WebhookState, fold_delivery, fold_webhook

__all__ = ["InvalidWebhookError", "IssuedSecret", "WebhookCommands"]

Clock = Callable[[], datetime]


class InvalidWebhookError(CommandError):
    """A URL or event filter the subscription cannot have (HTTP 422)."""


class IssuedSecret(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    secret: str  # shown once
    generation: int
    previous_valid_until: datetime | None
    seq: int


class WebhookCommands:
    def __init__(
        self,
        store: EventStore,
        master_key: bytes,
        *,
        policy: DestinationPolicy,
        rotation_grace_s: float,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._master = master_key
        self._policy = policy
        self._grace = timedelta(seconds=rotation_grace_s)
        self._clock = clock or (lambda: datetime.now(UTC))

    def _envelope(self, ctx: CommandContext, purpose: str, aggregate_id: str) -> dict[str, Any]:
        return ctx.envelope(purpose, aggregate_id, self._clock())

    def check_url(self, url: str) -> None:
        """Refuse a destination the notifier would refuse (for per-job webhooks too)."""
        self._check(url, None)

    def _check(self, url: str | None, events: Sequence[str] | None) -> tuple[str, ...] | None:
        try:
            if url is not None:
                self._policy.check_url(url)
            return None if events is None else check_filter(events)
        except (InvalidDestination, InvalidFilterError) as err:
            raise InvalidWebhookError(str(err)) from err
        except DestinationRefused as err:
            raise InvalidWebhookError(
                str(err), hint="webhooks go to public addresses only"
            ) from err

    async def load(self, ctx: CommandContext, webhook_id: str) -> WebhookState:
        state = fold_webhook((await self._store.read_aggregate("webhook", webhook_id)).events)
        if (
            state is None
            or state.deleted
            or not can_see_webhook(state.owner, ctx.actor, ctx.is_admin)
        ):
            raise NotFoundError(
                f"webhook {webhook_id} not found", hint="list yours with GET /v1/webhooks"
            )
        return state

    async def create(
        self, ctx: CommandContext, *, url: str, events: Sequence[str], description: str
    ) -> IssuedSecret:
        """A subscription; its secret (derived, never stored) is returned once. A retry
        under the same Idempotency-Key addresses the same webhook and secret."""
        patterns = self._check(url, events) or ()
        webhook_id = ctx.resource_id("whk")
        event = WebhookCreated(
            **self._envelope(ctx, "WebhookCreated", webhook_id),
            owner=ctx.actor,
            url=url,
            events=patterns,
            description=description,
            request_digest=ctx.request_digest,
        )
        try:
            seq = await self._store.append(event, expected=0)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"webhook {webhook_id} already exists", hint="use a new Idempotency-Key"
            ) from err
        return IssuedSecret(
            webhook_id=webhook_id,
            secret=derive_secret(self._master, webhook_id, 1),
            generation=1,
            previous_valid_until=None,
            seq=seq,
        )

    async def update(
        self,
        ctx: CommandContext,
        webhook_id: str,
        *,
        url: str | None,
        events: Sequence[str] | None,
        description: str | None,
    ) -> int:
        patterns = self._check(url, events)
        state = await self.load(ctx, webhook_id)
        event = WebhookUpdated(
            **self._envelope(ctx, "WebhookUpdated", webhook_id),
            url=url,
            events=patterns,
            description=description,
        )
        return await self._append(event, state)

    async def delete(self, ctx: CommandContext, webhook_id: str) -> int:
        state = await self.load(ctx, webhook_id)
        return await self._append(
            WebhookDeleted(**self._envelope(ctx, "WebhookDeleted", webhook_id)), state
        )

    async def enable(self, ctx: CommandContext, webhook_id: str) -> int:
        state = await self.load(ctx, webhook_id)
        if state.enabled:
            return state.last_seq
        return await self._append(
            WebhookEnabled(**self._envelope(ctx, "WebhookEnabled", webhook_id)), state
        )

    async def rotate(self, ctx: CommandContext, webhook_id: str) -> IssuedSecret:
        """A new secret generation; the previous secret stays valid for the grace period
        (deliveries are signed with both meanwhile)."""
        ctx = msgspec.structs.replace(ctx, idempotency_key=None)
        state = await self.load(ctx, webhook_id)
        valid_until = self._clock() + self._grace
        generation = state.generation + 1
        event = WebhookSecretRotated(
            **self._envelope(ctx, "WebhookSecretRotated", webhook_id),
            generation=generation,
            previous_valid_until=valid_until,
        )
        seq = await self._append(event, state)
        return IssuedSecret(
            webhook_id=webhook_id,
            secret=derive_secret(self._master, webhook_id, generation),
            generation=generation,
            previous_valid_until=valid_until,
            seq=seq,
        )

    async def redeliver(self, ctx: CommandContext, webhook_id: str, delivery_id: str) -> int:
        """Send a delivery again (a new series of attempts, same `webhook-id`)."""
        hook = await self.load(ctx, webhook_id)
        history = await self._store.read_aggregate("delivery", delivery_id)
        delivery = fold_delivery(history.events)
        if delivery is None or delivery.queued.endpoint_id != webhook_id:
            raise NotFoundError(f"delivery {delivery_id} of webhook {webhook_id} not found")
        # Pending deliveries of a disabled endpoint were abandoned: those may be re-sent.
        if delivery.status in ("queued", "retrying") and hook.enabled:
            raise ConflictError(
                f"delivery {delivery_id} is still being attempted",
                hint="wait for it to succeed or fail, then re-send it",
            )
        event = WebhookRedeliveryRequested(
            **self._envelope(ctx, "WebhookRedeliveryRequested", delivery_id),
            endpoint_id=webhook_id,
        )
        try:
            return await self._store.append(event, expected=history.last_seq)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"delivery {delivery_id} changed meanwhile", hint="retry the request"
            ) from err

    async def _append(self, event: Any, state: WebhookState) -> int:
        try:
            seq: int = await self._store.append(event, expected=state.last_seq)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"webhook {state.webhook_id} changed concurrently",
                hint="GET it again and retry",
            ) from err
        return seq
