"""Durable pull consumers with explicit acks: the plumbing the builder, executor and
notifier share.

One durable consumer per service on the one stream, filtered to the event types the
service handles. Scaling out is starting more processes on the same durable: JetStream
hands each message to one of them at a time.

- A handler that returns normally: the message is acked.
- `RetryLater`: nak with a delay (the handler's, else `ConsumerOptions.retry_delays_s`
  by delivery count); the server redelivers up to `max_deliver` times. A handler sees
  `Delivery.last_attempt` and must turn a retryable failure into a final event there.
- `Poison` or an undecodable message: `term` (no redelivery), with a log line.
- Any other exception: logged with its traceback, then nak with the retry delay.
- While a handler runs, `in_progress` is sent every `heartbeat_s`, so the server only
  redelivers a message whose process died (after `redelivery_s[n]` without a heartbeat:
  3 s on the first delivery).
- Messages flow in on pull requests kept open on the server, one request per batch (see
  `services._pull_flow`), not a fetch per message.
- `stop` set: no more requests; a message still arriving is nak'ed, running handlers
  get `stop_grace_s` to finish, then they are cancelled and their messages nak'ed for
  immediate redelivery elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DEFAULT_PREFIX, AckPolicy, ConsumerConfig, DeliverPolicy

from events import AnyEvent, ClinaiError, Event, decode_event, new_event_id
from services._pull_flow import PullFlow

__all__ = [
    "ConsumerOptions",
    "Delivery",
    "Handler",
    "Poison",
    "RetryLater",
    "ensure_consumer",
    "reaction_envelope",
    "run_consumer",
    "stop_on_signals",
]

log = logging.getLogger("clinai.consumer")


class ConsumerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a durable consumer is configured on the server and driven here."""

    # The server redelivers an unacked message after redelivery_s[n-1] seconds without a
    # heartbeat on its n-th delivery (the last value repeats). The first value is the
    # consumer's ack_wait; NATS calls this list `backoff`. A handler that runs sends a
    # heartbeat every heartbeat_s, so a short first wait only cuts short the wait for a
    # message whose process died: it is redelivered ~3 s after the crash, not 30 s.
    redelivery_s: tuple[float, ...] = (3.0, 30.0, 60.0, 120.0)
    max_deliver: int = 5
    heartbeat_s: float = 1.0  # in_progress interval while a handler runs
    retry_delays_s: tuple[float, ...] = (2.0, 10.0, 30.0, 60.0)  # nak delay by delivery
    # A pull request stays open on the server for pull_expires_s; while it waits, the
    # server sends a heartbeat every idle_heartbeat_s, which is also how fast `stop` is
    # noticed and lost requests are asked for again (after two silent intervals).
    pull_expires_s: float = 30.0
    idle_heartbeat_s: float = 2.0
    stop_grace_s: float = 5.0
    max_ack_pending: int = 1000

    def __post_init__(self) -> None:
        if not self.redelivery_s or min(self.redelivery_s) <= 0:
            raise ValueError("ConsumerOptions.redelivery_s needs positive durations")
        if self.max_deliver <= len(self.redelivery_s):
            raise ValueError(
                "ConsumerOptions.max_deliver must exceed the number of redelivery_s values"
            )
        if not 0 < self.heartbeat_s < self.redelivery_s[0]:
            raise ValueError("ConsumerOptions.heartbeat_s must be below redelivery_s[0]")
        if not self.retry_delays_s or min(self.retry_delays_s) < 0:
            raise ValueError("ConsumerOptions.retry_delays_s needs non-negative durations")
        if not 0 < self.idle_heartbeat_s <= self.pull_expires_s / 2:
            raise ValueError(
                "ConsumerOptions.idle_heartbeat_s must be positive and at most half of "
                "pull_expires_s"
            )
        if self.stop_grace_s < 0 or self.max_ack_pending < 1:
            raise ValueError("ConsumerOptions: stop_grace_s, max_ack_pending")

    def retry_delay(self, num_delivered: int) -> float:
        index = min(max(num_delivered, 1), len(self.retry_delays_s)) - 1
        return self.retry_delays_s[index]


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


def consumer_config(
    durable: str, filter_subjects: Sequence[str], options: ConsumerOptions
) -> ConsumerConfig:
    if not filter_subjects:
        raise ValueError("a consumer needs at least one filter subject")
    return ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=options.redelivery_s[0],
        backoff=list(options.redelivery_s),
        max_deliver=options.max_deliver,
        max_ack_pending=options.max_ack_pending,
        filter_subjects=list(filter_subjects),
    )


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subjects: Sequence[str],
    options: ConsumerOptions,
) -> None:
    """Create the durable consumer, or update it to this configuration."""
    await js.add_consumer(stream, consumer_config(durable, filter_subjects, options))


async def run_consumer(
    nc: NATS,
    *,
    stream: str,
    durable: str,
    filter_subjects: Sequence[str],
    handler: Handler,
    concurrency: int,
    stop: asyncio.Event,
    options: ConsumerOptions | None = None,
) -> None:
    """Handle messages, at most `concurrency` at a time, until `stop` is set."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    options = options or ConsumerOptions()
    js = nc.jetstream()
    await ensure_consumer(js, stream, durable, filter_subjects, options)
    flow = PullFlow(
        nc,
        recreate=lambda: ensure_consumer(js, stream, durable, filter_subjects, options),
        next_subject=f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        handle=lambda msg: _handle(msg, handler, options, durable),
        concurrency=concurrency,
        pull_expires_s=options.pull_expires_s,
        idle_heartbeat_s=options.idle_heartbeat_s,
        durable=durable,
    )
    await flow.start()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.idle_heartbeat_s)
            await flow.check()
    finally:
        await flow.close(options.stop_grace_s)


async def _handle(msg: Msg, handler: Handler, options: ConsumerOptions, durable: str) -> None:
    meta = msg.metadata
    num_delivered = meta.num_delivered or 1
    seq = meta.sequence.stream
    beat = _Heartbeat(msg, options.heartbeat_s)
    try:
        try:
            event = decode_event(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise Poison(f"undecodable event on {msg.subject}: {err}") from err
        await handler(
            Delivery(
                event=event,
                seq=seq,
                num_delivered=num_delivered,
                max_deliver=options.max_deliver,
            )
        )
    except Poison as err:
        log.error("consumer %s: terminating message seq %s: %s", durable, seq, err.reason)
        await _respond(msg.term())
    except RetryLater as err:
        await _nak_or_give_up(msg, options, durable, seq, num_delivered, err.reason, err.delay_s)
    except asyncio.CancelledError:
        # Stopping: hand the message to another process right away.
        await asyncio.shield(_respond(msg.nak()))
        raise
    except Exception as err:
        log.exception("consumer %s: handler failed on message seq %s", durable, seq)
        await _nak_or_give_up(msg, options, durable, seq, num_delivered, repr(err), None)
    else:
        await _respond(msg.ack())
    finally:
        beat.stop()


async def _nak_or_give_up(
    msg: Msg,
    options: ConsumerOptions,
    durable: str,
    seq: int,
    num_delivered: int,
    reason: str,
    delay_s: float | None,
) -> None:
    if num_delivered >= options.max_deliver:
        log.error(
            "consumer %s: giving up on message seq %s after %s deliveries: %s",
            durable, seq, num_delivered, reason,
        )  # fmt: skip
        await _respond(msg.term())
        return
    delay = options.retry_delay(num_delivered) if delay_s is None else delay_s
    log.warning(
        "consumer %s: retrying message seq %s in %.1f s (delivery %s): %s",
        durable, seq, delay, num_delivered, reason,
    )  # fmt: skip
    await _respond(msg.nak(delay=delay))


async def _respond(reply: Awaitable[None]) -> None:
    """Ack/nak/term are fire-and-forget publishes; a lost one means a redelivery, which
    every handler tolerates."""
    try:
        await reply
    except nats.errors.Error as err:
        log.warning("could not answer a message (%r); it will be redelivered", err)


class _Heartbeat:
    """`in_progress` every `interval_s` until `stop()`. A timer, not a task per message:
    almost every handler is done long before the first beat."""

    def __init__(self, msg: Msg, interval_s: float) -> None:
        self._msg = msg
        self._interval_s = interval_s
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(interval_s, self._beat)
        self._sending: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self._timer.cancel()
        if self._sending is not None:
            self._sending.cancel()  # a heartbeat lost now changes nothing

    def _beat(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self._interval_s, self._beat)

    async def _send(self) -> None:
        try:
            await self._msg.in_progress()
        except nats.errors.Error as err:
            log.warning("in_progress heartbeat failed: %r", err)


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT: a service's graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
