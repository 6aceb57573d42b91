"""How a durable consumer is configured on the server and driven here."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = ["ConsumerOptions", "consumer_config", "ensure_consumer"]


class ConsumerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Timers and bounds of a durable consumer (see the package docstring)."""

    # The server redelivers an unacked message after redelivery_s[n-1] seconds without a
    # heartbeat on its n-th delivery (the last value repeats). The first value is the
    # consumer's ack_wait; NATS calls this list `backoff`. A handler that runs sends a
    # heartbeat every heartbeat_s, so a short first wait only cuts short the wait for a
    # message whose process died: it is redelivered ~3 s after the crash, not 30 s.
    redelivery_s: tuple[float, ...] = (3.0, 30.0, 60.0, 120.0)
    max_deliver: int = 5
    heartbeat_s: float = 1.0  # in_progress interval while a handler runs
    retry_delays_s: tuple[float, ...] = (2.0, 10.0, 30.0, 60.0)  # nak delay by delivery
    # A pull request stays open on the server for pull_expires_s, then the next one is
    # sent. While it waits, the server sends a heartbeat every pull_heartbeat_s: two
    # missed, or a reconnect, and the requests are taken as lost and asked for again.
    pull_expires_s: float = 5.0
    pull_heartbeat_s: float = 1.0
    pull_batch: int = 100  # at most this many messages asked for per pull request
    # After a pull that did not fill its batch, wait this long before the next: messages
    # gather into fewer, larger batches (one pull request and one pass of FastStream's
    # pipeline each), each held up to this long. For a consumer whose latency does not
    # matter (the notifier); 0: pull again at once.
    pull_linger_s: float = 0.0
    # How often each process checks that the durable exists, and makes it again if not.
    check_s: float = 2.0
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
        if not 0 < self.pull_heartbeat_s <= self.pull_expires_s / 2:
            raise ValueError(
                "ConsumerOptions.pull_heartbeat_s must be positive and at most half of "
                "pull_expires_s"
            )
        if self.pull_linger_s < 0 or self.pull_linger_s >= self.pull_expires_s:
            raise ValueError("ConsumerOptions.pull_linger_s must be in [0, pull_expires_s)")
        if self.pull_expires_s <= 0 or self.check_s <= 0 or self.pull_batch < 1:
            raise ValueError(
                "ConsumerOptions: pull_expires_s, check_s and pull_batch must be positive"
            )
        if self.stop_grace_s < 0 or self.max_ack_pending < 1:
            raise ValueError("ConsumerOptions: stop_grace_s, max_ack_pending")

    def retry_delay(self, num_delivered: int) -> float:
        index = min(max(num_delivered, 1), len(self.retry_delays_s)) - 1
        return self.retry_delays_s[index]


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
