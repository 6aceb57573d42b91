"""Per-endpoint delivery queues: each endpoint has its own scheduler task and at most
`concurrency` attempts in flight, so a slow or dead endpoint holds up nothing else.
Retries are scheduled (a heap of due times), never slept on by the consumer.

Every attempt is appended as `WebhookDeliveryAttempted` with the delivery's expected
sequence (a competing attempt loses the append and drops its copy). An endpoint that
keeps failing past the threshold is disabled with `WebhookDisabled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import msgspec

from events import (
    ConcurrencyConflictError,
    EventStore,
    EventStoreError,
    WebhookDeliveryAttempted,
    WebhookDisabled,
    new_event_id,
    scrub_text,
)
from projections import webhook_queries
from services.domain.signing import default_secret, derive_secret, signature_header
from services.domain.webhook_aggregates import fold_webhook
from services.metrics import WebhookMetrics
from services.notifier._sender import AttemptResult, Sender

__all__ = ["DispatchOptions", "Dispatcher", "PendingDelivery", "backoff_delay"]

log = logging.getLogger("clinai.notifier")

Clock = Callable[[], datetime]
# A subscription's URL, secret generation and enabled flag are re-read this often.
_ENDPOINT_TTL_S = 0.5
BodyBuilder = Callable[["PendingDelivery"], Awaitable[bytes | None]]


class DispatchOptions(msgspec.Struct, frozen=True, kw_only=True):
    concurrency: int = 4  # attempts in flight per endpoint
    retry_base_s: float = 5.0
    retry_max_delay_s: float = 7200.0
    horizon_s: float = 86400.0
    disable_after_failures: int = 20
    disable_after_s: float = 86400.0


class PendingDelivery(msgspec.Struct, kw_only=True):
    delivery_id: str
    endpoint_id: str
    owner: str
    message_id: str
    event_type: str
    source_seq: int
    resource_id: str
    url: str
    attempts: int
    horizon_from: datetime
    due: datetime
    last_seq: int  # the delivery aggregate's last sequence (appends expect it)
    correlation_id: str
    body: bytes | None = None

    @property
    def is_job_hook(self) -> bool:
        return self.endpoint_id.startswith("jwh_")


def backoff_delay(attempts: int, options: DispatchOptions, rng: random.Random) -> float:
    """Exponential with jitter: base * 2^(n-1), capped, times a uniform 0.5..1."""
    raw = min(options.retry_base_s * 2 ** min(attempts - 1, 40), options.retry_max_delay_s)
    return float(raw * (0.5 + rng.random() / 2))


class _Endpoint:
    def __init__(self, endpoint_id: str, concurrency: int) -> None:
        self.endpoint_id = endpoint_id
        self.heap: list[tuple[datetime, int, PendingDelivery]] = []
        self.wake = asyncio.Event()
        self.slots = asyncio.Semaphore(concurrency)
        self.streak: int | None = None  # consecutive failures, loaded on first use
        self.failing_since: datetime | None = None
        self.task: asyncio.Task[None] | None = None


class Dispatcher:
    def __init__(
        self,
        *,
        store: EventStore,
        pool: object,
        sender: Sender,
        master_key: bytes,
        body: BodyBuilder,
        options: DispatchOptions,
        clock: Clock,
        rng: random.Random | None = None,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or WebhookMetrics()
        self._pool = pool
        self._sender = sender
        self._master = master_key
        self._body = body
        self._options = options
        self._clock = clock
        self._rng = rng or random.Random()
        self._endpoints: dict[str, _Endpoint] = {}
        self._active: set[str] = set()
        self._attempts: set[asyncio.Task[None]] = set()
        self._order = itertools.count()
        self._hooks: dict[str, tuple[float, webhook_queries.WebhookView | None]] = {}

    @property
    def pending(self) -> int:
        return len(self._active)

    def submit(self, delivery: PendingDelivery) -> bool:
        """Schedule a delivery at its `due` time; False when it is already scheduled."""
        if delivery.delivery_id in self._active:
            return False
        self._active.add(delivery.delivery_id)
        self._push(delivery)
        return True

    def _push(self, delivery: PendingDelivery) -> None:
        endpoint = self._endpoints.get(delivery.endpoint_id)
        if endpoint is None:
            endpoint = _Endpoint(delivery.endpoint_id, self._options.concurrency)
            endpoint.task = asyncio.create_task(self._run(endpoint), name=delivery.endpoint_id)
            self._endpoints[delivery.endpoint_id] = endpoint
        heapq.heappush(endpoint.heap, (delivery.due, next(self._order), delivery))
        endpoint.wake.set()

    async def close(self) -> None:
        tasks = [e.task for e in self._endpoints.values() if e.task is not None]
        tasks += list(self._attempts)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, endpoint: _Endpoint) -> None:
        while True:
            if not endpoint.heap:
                endpoint.wake.clear()
                await endpoint.wake.wait()
                continue
            delay = (endpoint.heap[0][0] - self._clock()).total_seconds()
            if delay > 0:
                endpoint.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(endpoint.wake.wait(), delay)
                continue
            await endpoint.slots.acquire()
            if not endpoint.heap:  # dropped while waiting for a slot (disabled)
                endpoint.slots.release()
                continue
            _, _, delivery = heapq.heappop(endpoint.heap)
            task = asyncio.create_task(self._attempt(endpoint, delivery))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
            task.add_done_callback(lambda _: endpoint.slots.release())

    def _drop(self, delivery: PendingDelivery) -> None:
        self._active.discard(delivery.delivery_id)

    async def _attempt(self, endpoint: _Endpoint, delivery: PendingDelivery) -> None:
        try:
            await self._attempt_once(endpoint, delivery)
        except EventStoreError as err:
            log.warning("delivery %s: log unavailable (%s); retrying", delivery.delivery_id, err)
            delivery.due = self._clock() + timedelta(seconds=1)
            self._push(delivery)
        except Exception:
            log.exception("delivery %s: attempt failed unexpectedly", delivery.delivery_id)
            delivery.due = self._clock() + timedelta(seconds=self._options.retry_base_s)
            self._push(delivery)

    async def _attempt_once(self, endpoint: _Endpoint, delivery: PendingDelivery) -> None:
        target = await self._target(endpoint, delivery)
        if target is None:
            self._drop(delivery)
            return
        url, secrets = target
        if delivery.body is None:
            delivery.body = await self._body(delivery)
            if delivery.body is None:
                log.warning("delivery %s: resource is gone; dropped", delivery.delivery_id)
                self._drop(delivery)
                return
        now = self._clock()
        stamp = int(now.timestamp())
        headers = {
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(
                secrets, delivery.message_id, stamp, delivery.body
            ),
        }
        result = await self._sender.send(url, headers, delivery.body)
        await self._record(endpoint, delivery, result)

    async def _target(
        self, endpoint: _Endpoint, delivery: PendingDelivery
    ) -> tuple[str, list[str]] | None:
        """(URL, secrets to sign with) now, or None when the endpoint is gone or off."""
        if delivery.is_job_hook:
            return delivery.url, [default_secret(self._master, delivery.owner)]
        hook = await self._webhook(delivery.endpoint_id)
        if hook is None or hook.deleted_at is not None or not hook.enabled:
            return None
        if endpoint.streak is None:
            endpoint.streak = hook.consecutive_failures
            endpoint.failing_since = hook.failing_since
        secrets = [derive_secret(self._master, hook.id, hook.generation)]
        grace = hook.previous_valid_until
        if hook.generation > 1 and grace is not None and self._clock() < grace:
            secrets.append(derive_secret(self._master, hook.id, hook.generation - 1))
        return hook.url, secrets

    async def _webhook(self, endpoint_id: str) -> webhook_queries.WebhookView | None:
        """The subscription as projected; an enabled one is re-read every `_ENDPOINT_TTL_S`."""
        now = time.monotonic()
        cached = self._hooks.get(endpoint_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        hook = await webhook_queries.get_webhook(self._pool, endpoint_id)
        if len(self._hooks) > 10_000:
            self._hooks.clear()
        if hook is not None and hook.enabled and hook.deleted_at is None:
            self._hooks[endpoint_id] = (now + _ENDPOINT_TTL_S, hook)  # off ones: re-read
        else:
            self._hooks.pop(endpoint_id, None)
        return hook

    async def _record(
        self, endpoint: _Endpoint, delivery: PendingDelivery, result: AttemptResult
    ) -> None:
        now = self._clock()
        attempt = delivery.attempts + 1
        next_at: datetime | None = None
        if result.ok:
            outcome = "succeeded"
        elif result.retryable:
            delay = backoff_delay(attempt, self._options, self._rng)
            next_at = now + timedelta(seconds=delay)
            horizon_end = delivery.horizon_from + timedelta(seconds=self._options.horizon_s)
            outcome = "retrying" if next_at <= horizon_end else "failed"
            next_at = next_at if outcome == "retrying" else None
        else:
            outcome = "failed"
        event = WebhookDeliveryAttempted(
            id=new_event_id(),
            aggregate_id=delivery.delivery_id,
            occurred_at=now,
            actor="notifier",
            correlation_id=delivery.correlation_id,
            endpoint_id=delivery.endpoint_id,
            attempt=attempt,
            outcome=outcome,  # type: ignore[arg-type]
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=None if result.error is None else scrub_text(result.error),
            next_attempt_at=next_at,
        )
        try:
            delivery.last_seq = await self._store.append(event, expected=delivery.last_seq)
            sent = result.status_code is not None or result.latency_ms > 0
            self._metrics.attempted(outcome, result.latency_ms / 1000 if sent else None)
        except ConcurrencyConflictError:
            log.info("delivery %s: attempted elsewhere; dropping", delivery.delivery_id)
            self._drop(delivery)
            return
        delivery.attempts = attempt
        if next_at is not None:
            delivery.due = next_at
            self._push(delivery)
        else:
            self._drop(delivery)
        if not delivery.is_job_hook:
            await self._track_streak(endpoint, result.ok, now)

    async def _track_streak(self, endpoint: _Endpoint, ok: bool, now: datetime) -> None:
        if ok:
            endpoint.streak, endpoint.failing_since = 0, None
            return
        endpoint.streak = (endpoint.streak or 0) + 1
        endpoint.failing_since = endpoint.failing_since or now
        failing_for = (now - endpoint.failing_since).total_seconds()
        if (
            endpoint.streak < self._options.disable_after_failures
            or failing_for < self._options.disable_after_s
        ):
            return
        streak = endpoint.streak
        await self._disable(endpoint, streak)

    async def _disable(self, endpoint: _Endpoint, streak: int) -> None:
        history = await self._store.read_aggregate("webhook", endpoint.endpoint_id)
        state = fold_webhook(history.events)
        if state is not None and state.enabled and not state.deleted:
            event = WebhookDisabled(
                id=new_event_id(),
                aggregate_id=endpoint.endpoint_id,
                occurred_at=self._clock(),
                actor="notifier",
                correlation_id=endpoint.endpoint_id,
                reason=f"{streak} consecutive failed delivery attempts",
                consecutive_failures=streak,
            )
            with contextlib.suppress(ConcurrencyConflictError):
                await self._store.append(event, expected=state.last_seq)
                self._metrics.disabled()
                log.warning("webhook %s disabled after %d failures", endpoint.endpoint_id, streak)
        self._hooks.pop(endpoint.endpoint_id, None)
        for _, _, delivery in endpoint.heap:
            self._drop(delivery)
        endpoint.heap.clear()
        endpoint.streak, endpoint.failing_since = 0, None
