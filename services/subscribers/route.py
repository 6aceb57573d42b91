"""A service's durable and its FastStream routes: `durable_route` is the `NatsRoute`
of one handler on it."""

from __future__ import annotations

import msgspec
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRoute, PullSub
from nats.js.api import ConsumerConfig

from services.subscribers._decode import parse_batch
from services.subscribers.delivery import Handler
from services.subscribers.options import ConsumerOptions

__all__ = ["Durable", "durable_route"]


class Durable(msgspec.Struct, frozen=True, kw_only=True):
    """One durable consumer on `stream`, filtered to `subjects`: a service's share of
    the log, whichever of its processes takes each message; each process handles at
    most `concurrency` of its messages at a time."""

    stream: str
    name: str
    subjects: tuple[str, ...]
    concurrency: int
    options: ConsumerOptions = ConsumerOptions()

    def __post_init__(self) -> None:
        if not self.subjects:
            raise ValueError(f"durable {self.name!r} needs at least one filter subject")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")


def durable_route(handler: Handler, durable: Durable) -> NatsRoute:
    """`handler` on `durable`, fed batches by `FastBatchPull` (see `StandingPulls`)."""
    options = durable.options
    return NatsRoute(
        handler,
        durable.subjects[0],
        config=ConsumerConfig(filter_subjects=list(durable.subjects)),
        durable=durable.name,
        stream=JStream(durable.stream, declare=False),
        # One pass of FastStream's pipeline per fetched batch; `Answering` hands each
        # message to `handler`, decoded by `DeliveryDecoder`, and answers it.
        pull_sub=PullSub(batch_size=options.pull_batch, timeout=options.pull_expires_s, batch=True),
        ack_policy=AckPolicy.MANUAL,  # answered by `Answering`, by how the handler ended
        parser=parse_batch,
        include_in_schema=False,
    )
