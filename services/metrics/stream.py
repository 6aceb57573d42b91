"""Read from JetStream and Postgres when scraped: each consumer's backlog, and how far
the read models are behind the log (projection lag)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from prometheus_client import Gauge

from services.metrics.registry import ServiceMetrics

__all__ = ["ConsumerProbe", "ProjectionProbe"]


class ConsumerProbe:
    """A durable consumer's state as the server has it (`consumer_info`): messages not
    yet delivered, delivered and unacknowledged, and redelivered. Every process on a
    durable reports the same values (take the max across them)."""

    def __init__(
        self, metrics: ServiceMetrics, js: JetStreamContext, stream: str, durable: str
    ) -> None:
        self._js = js
        self._stream = stream
        self._durable = durable
        registry = metrics.registry
        labels = ["consumer"]
        self._pending = Gauge(
            "clinai_consumer_pending_messages",
            "Messages of the stream the durable consumer has not delivered yet (its backlog).",
            labels,
            registry=registry,
        ).labels(durable)
        self._ack_pending = Gauge(
            "clinai_consumer_ack_pending_messages",
            "Messages delivered to the consumer's processes and not acknowledged yet.",
            labels,
            registry=registry,
        ).labels(durable)
        self._redelivered = Gauge(
            "clinai_consumer_redelivered_messages",
            "Messages delivered more than once and not acknowledged yet.",
            labels,
            registry=registry,
        ).labels(durable)
        metrics.add_probe(f"consumer_{durable}", self.read)

    async def read(self) -> None:
        try:
            info = await self._js.consumer_info(self._stream, self._durable)
        except BaseException:
            for gauge in (self._pending, self._ack_pending, self._redelivered):
                gauge.set(float("nan"))
            raise
        self._pending.set(info.num_pending or 0)
        self._ack_pending.set(info.num_ack_pending or 0)
        self._redelivered.set(info.num_redelivered or 0)


class ProjectionProbe:
    """The stream's last sequence, the read models' checkpoint, and their difference."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        stream_last_seq: Callable[[], Awaitable[int]],
        checkpoint: Callable[[], Awaitable[int]],
    ) -> None:
        self._stream_last_seq = stream_last_seq
        self._checkpoint = checkpoint
        registry = metrics.registry
        self._last = Gauge(
            "clinai_stream_last_sequence",
            "The sequence of the last event in the stream.",
            registry=registry,
        )
        self._projected = Gauge(
            "clinai_projection_checkpoint",
            "The last stream sequence the read models include.",
            registry=registry,
        )
        self._lag = Gauge(
            "clinai_projection_lag_events",
            "Events in the stream that the read models do not include yet.",
            registry=registry,
        )
        metrics.add_probe("projection", self.read)

    async def read(self) -> None:
        try:
            # The checkpoint first: an event appended in between shows as lag, never as
            # a negative one.
            projected = await self._checkpoint()
            last = await self._stream_last_seq()
        except BaseException:
            for gauge in (self._last, self._projected, self._lag):
                gauge.set(float("nan"))
            raise
        self._last.set(last)
        self._projected.set(projected)
        self._lag.set(max(last - projected, 0))
