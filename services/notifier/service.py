"""The notifier service: a durable consumer of the events webhooks carry, which queues
one delivery per matching endpoint and hands it to the per-endpoint dispatcher.

Durability: a source event is acked only once its deliveries are recorded in the log
(`WebhookDeliveryQueued`, one `delivery` aggregate each, appended with expected sequence
0 so a redelivered event queues nothing twice). Every attempt is an event too, so what
is still to do is derivable from the log: on start, once the projection has caught up
with the stream, the deliveries still queued or retrying are re-planned at their
`next_attempt_at`, before the consumer starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from events import (
    ConcurrencyConflictError,
    EventStore,
    WebhookDeliveryQueued,
    WebhookRedeliveryRequested,
    new_event_id,
)
from events.subjects import PREFIX
from projections import webhook_queries
from projections.db import create_pool
from projections.watermark import ProjectionWatermark
from services.domain.destinations import DestinationPolicy
from services.domain.event_types import (
    SOURCE_SUBJECTS,
    job_hook_wants,
    matches,
    webhook_type,
)
from services.domain.signing import master_key
from services.domain.webhook_aggregates import fold_delivery
from services.infra.connections import connect_nats, open_blob_store, open_event_store
from services.metrics import ConsumerProbe, ServiceMetrics, WebhookMetrics, serving_metrics
from services.notifier._dispatch import Dispatcher, DispatchOptions, PendingDelivery
from services.notifier._payload import Snapshot, Snapshots, webhook_body
from services.notifier._receivers import Receivers, ReceiversCache, receivers_of
from services.notifier._sender import Sender
from services.notifier._subscriptions import Subscriptions
from services.outages import Outage, report_library_failures
from services.settings import Settings, SettingsError
from services.subscribers import (
    ConsumerOptions,
    Delivery,
    Durable,
    RetryLater,
    durable_route,
    quietly,
    stop_on_signals,
    subscribed,
)

__all__ = [
    "NOTIFIER_DURABLE",
    "NOTIFIER_SUBJECTS",
    "NotifierHandler",
    "job_endpoint_id",
    "run_notifier",
]

log = logging.getLogger("clinai.notifier")

NOTIFIER_DURABLE = "notifier"
NOTIFIER_SUBJECTS = (*SOURCE_SUBJECTS, f"{PREFIX}.delivery.*.WebhookRedeliveryRequested")
NOTIFIER_CONCURRENCY = 64
# Webhooks can wait 20 ms: events gather into fewer pulls, each one request and one pass
# of FastStream's pipeline (under load ~4 events a job arrive one or two per pull).
NOTIFIER_CONSUMER = ConsumerOptions(pull_linger_s=0.02)
_PROJECTION_WAIT_S = 10.0

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def job_endpoint_id(job_id: str) -> str:
    """The endpoint id of a job's own webhook URL."""
    return f"jwh_{job_id}"


def _delivery_ids(endpoint_id: str, source_event_id: str) -> tuple[str, str]:
    """(delivery id, webhook-id): deterministic, so a redelivered event maps to the same."""
    digest = hashlib.sha256(f"{endpoint_id}\x00{source_event_id}".encode()).hexdigest()[:32]
    return f"dlv_{digest}", f"msg_{digest}"


class NotifierHandler:
    """Handles one consumed event (see the module docstring)."""

    def __init__(
        self,
        *,
        store: EventStore,
        pool: object,
        watermark: ProjectionWatermark,
        snapshots: Snapshots,
        dispatcher: Dispatcher,
        clock: Clock = _utcnow,
        facts: ReceiversCache | None = None,
    ) -> None:
        self._store = store
        self._facts = facts if facts is not None else ReceiversCache()
        self._watermark = watermark
        self._subscriptions = Subscriptions(pool, watermark)
        self._snapshots = snapshots
        self._dispatcher = dispatcher
        self._clock = clock

    async def __call__(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, WebhookRedeliveryRequested):
            await self._redeliver(event.aggregate_id)
            return
        event_type = webhook_type(event)
        if event_type is None:
            return
        # Who is to receive it is decided from facts that never change (owner, a job's
        # own webhook); the snapshot, the costly part, is built only for a receiver.
        aggregate, resource_id = event.aggregate, event.aggregate_id
        snap: Snapshot | None = None
        facts = self._facts.get(aggregate, resource_id) or receivers_of(event)
        if facts is None:
            snap = await self._snapshots.at(aggregate, resource_id, delivery.seq, event)
            if snap is None:
                return
            facts = Receivers(owner=snap.owner, job_webhook=snap.job_webhook)
        self._facts.put(aggregate, resource_id, facts)
        if not await self._watermark.wait_for(delivery.seq, _PROJECTION_WAIT_S):
            raise RetryLater("the projection has not reached this event yet")
        targets = [
            (hook.id, hook.url)
            for hook in await self._subscriptions.of(facts.owner, delivery.seq)
            if matches(hook.events, event_type)
        ]
        hook = facts.job_webhook
        if hook is not None and job_hook_wants(hook.get("events", ()), event_type):
            targets.append((job_endpoint_id(resource_id), str(hook["url"])))
        if not targets:
            return
        if snap is None:
            snap = await self._snapshots.at(aggregate, resource_id, delivery.seq, event)
            if snap is None:
                return
        body = webhook_body(event_type, snap.occurred_at, snap.data)
        now = self._clock()
        queued = []
        for endpoint_id, url in targets:
            delivery_id, message_id = _delivery_ids(endpoint_id, event.id)
            queued.append(
                WebhookDeliveryQueued(
                    id=new_event_id(),
                    aggregate_id=delivery_id,
                    occurred_at=now,
                    actor="notifier",
                    correlation_id=event.correlation_id,
                    causation_id=event.id,
                    endpoint_id=endpoint_id,
                    owner=facts.owner,
                    message_id=message_id,
                    event_type=event_type,
                    source_seq=delivery.seq,
                    source_id=event.id,
                    resource_id=event.aggregate_id,
                    url=url,
                )
            )
        # Independent facts on separate aggregates, each idempotent (expected 0): a
        # partial failure is finished by the redelivered event.
        seqs = await asyncio.gather(*(self._queue(q) for q in queued))
        for q, seq in zip(queued, seqs, strict=True):
            if seq is None:  # queued by an earlier try, whose outcome may have been lost
                await self._redeliver(q.aggregate_id)
                continue
            self._dispatcher.submit(
                PendingDelivery(
                    delivery_id=q.aggregate_id,
                    endpoint_id=q.endpoint_id,
                    owner=q.owner,
                    message_id=q.message_id,
                    event_type=q.event_type,
                    source_seq=q.source_seq,
                    resource_id=q.resource_id,
                    url=q.url,
                    attempts=0,
                    horizon_from=now,
                    due=now,
                    last_seq=seq,
                    correlation_id=q.correlation_id,
                    body=body,
                )
            )

    async def _queue(self, event: WebhookDeliveryQueued) -> int | None:
        """The Queued event's sequence; None when the delivery was already queued."""
        try:
            return await self._store.append(event, expected=0)
        except ConcurrencyConflictError:
            return None

    async def _redeliver(self, delivery_id: str) -> None:
        """Schedule the delivery if it is still queued (a scheduled one is left as it
        is): the way back to an attempt for a delivery that is in the log but may be in
        no dispatcher, such as one whose Queued append timed out yet was stored (a NATS
        stream leader killed), so that its source event came again."""
        history = await self._store.read_aggregate("delivery", delivery_id)
        state = fold_delivery(history.events)
        if state is None or state.status != "queued":
            return
        q = state.queued
        self._dispatcher.submit(
            PendingDelivery(
                delivery_id=delivery_id,
                endpoint_id=q.endpoint_id,
                owner=q.owner,
                message_id=q.message_id,
                event_type=q.event_type,
                source_seq=q.source_seq,
                resource_id=q.resource_id,
                url=q.url,
                attempts=state.attempts,
                horizon_from=state.horizon_from,
                due=self._clock(),
                last_seq=history.last_seq,
                correlation_id=q.correlation_id,
            )
        )


def _body_builder(snapshots: Snapshots) -> Callable[[PendingDelivery], object]:
    async def build(delivery: PendingDelivery) -> bytes | None:
        aggregate = delivery.event_type.split(".", 1)[0]
        snap = await snapshots.at(aggregate, delivery.resource_id, delivery.source_seq)
        if snap is None:
            return None
        return webhook_body(delivery.event_type, snap.occurred_at, snap.data)

    return build


async def replan(
    store: EventStore,
    pool: object,
    watermark: ProjectionWatermark,
    dispatcher: Dispatcher,
    clock: Clock = _utcnow,
) -> int:
    """Schedule the deliveries still queued or retrying (from the projection, once it
    has caught up with the stream); return how many."""
    target = await store.stream_last_seq()
    if not await watermark.wait_for(target, 60.0):
        log.warning("projection behind the stream at start; re-planning from what it has")
    count = 0
    for d in await webhook_queries.pending_deliveries(pool):
        due = d.next_attempt_at or clock()
        count += dispatcher.submit(
            PendingDelivery(
                delivery_id=d.id,
                endpoint_id=d.endpoint_id,
                owner=d.owner,
                message_id=d.message_id,
                event_type=d.event_type,
                source_seq=d.source_seq,
                resource_id=d.resource_id,
                url=d.url,
                attempts=d.attempts,
                horizon_from=d.horizon_from,
                due=due,
                last_seq=d.last_seq,
                correlation_id=d.id,
            )
        )
    return count


def dispatch_options(settings: Settings) -> DispatchOptions:
    return DispatchOptions(
        concurrency=settings.webhook_endpoint_concurrency,
        retry_base_s=settings.webhook_retry_base_s,
        retry_max_delay_s=settings.webhook_retry_max_delay_s,
        horizon_s=settings.webhook_retry_horizon_s,
        disable_after_failures=settings.webhook_disable_after_failures,
        disable_after_s=settings.webhook_disable_after_s,
    )


async def run_notifier(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    consumer: ConsumerOptions | None = None,
    concurrency: int = NOTIFIER_CONCURRENCY,
    clock: Clock = _utcnow,
    rng: random.Random | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when no `stop` is given)."""
    if settings.database_url is None:
        raise SettingsError("CLINAI_DATABASE_URL is not set: point it at Postgres")
    stop = stop or stop_on_signals()
    policy = DestinationPolicy.from_setting(settings.webhook_allow_networks)
    master = master_key(settings)
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect_nats(settings, name="notifier")
        stack.push_async_callback(quietly, nc.drain)
        # Queries only: no session state to reset between them.
        postgres = Outage("Postgres", log)
        report_library_failures(logging.getLogger("asyncpg.pool"), postgres)
        pool: asyncpg.Pool = await create_pool(
            settings.database_url, min_size=1, reset_sessions=False, on_connect=postgres.recovered
        )
        stack.push_async_callback(pool.close)
        watermark = await ProjectionWatermark.open(settings.database_url)
        stack.push_async_callback(watermark.stop)
        blobs = open_blob_store(settings)
        stack.push_async_callback(blobs.close)
        sender = await Sender.open(
            policy,
            timeout_s=settings.webhook_timeout_s,
            max_response_bytes=settings.webhook_max_response_bytes,
        )
        stack.push_async_callback(sender.close)
        store = await open_event_store(settings, nc)
        snapshots = Snapshots(store, blobs)
        metrics = ServiceMetrics("notifier")
        webhook_metrics = WebhookMetrics(metrics)
        dispatcher = Dispatcher(
            store=store,
            pool=pool,
            sender=sender,
            master_key=master,
            body=_body_builder(snapshots),  # type: ignore[arg-type]
            options=dispatch_options(settings),
            clock=clock,
            rng=rng,
            metrics=webhook_metrics,
        )
        stack.push_async_callback(dispatcher.close)
        webhook_metrics.watch(
            lambda: dispatcher.pending, lambda: webhook_queries.count_disabled_webhooks(pool)
        )
        ConsumerProbe(metrics, nc.jetstream(), settings.stream_name, NOTIFIER_DURABLE)
        await stack.enter_async_context(serving_metrics(metrics, settings))
        planned = await replan(store, pool, watermark, dispatcher, clock)
        handler = NotifierHandler(
            store=store,
            pool=pool,
            watermark=watermark,
            snapshots=snapshots,
            dispatcher=dispatcher,
            clock=clock,
        )
        durable = Durable(
            stream=settings.stream_name,
            name=NOTIFIER_DURABLE,
            subjects=NOTIFIER_SUBJECTS,
            concurrency=concurrency,
            options=consumer or NOTIFIER_CONSUMER,
        )
        await stack.enter_async_context(subscribed(nc, durable, [durable_route(handler, durable)]))
        log.info(
            "notifier consuming %d subjects; %d deliveries re-planned",
            len(NOTIFIER_SUBJECTS),
            planned,
        )
        await stop.wait()
