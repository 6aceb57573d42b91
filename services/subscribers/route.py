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

    @property
    def batch(self) -> int:
        """Messages asked for per pull request: up to half the room, at most
        `options.pull_batch`."""
        return max(1, min(self.options.pull_batch, self.concurrency // 2))


def durable_route(handler: Handler, durable: Durable) -> NatsRoute:
    """`handler` on `durable`. A pull request is answered as soon as one message is
    there, with whatever else is there already (up to `durable.batch`): one request per
    batch under load, no wait for a lone message. The next request goes out once the
    batch is handed to handlers (see `Answering`)."""
    options = durable.options
    return NatsRoute(
        handler,
        durable.subjects[0],
        config=ConsumerConfig(filter_subjects=list(durable.subjects)),
        durable=durable.name,
        stream=JStream(durable.stream, declare=False),
        # One pass of FastStream's pipeline per fetched batch; `Answering` hands each
        # message to `handler`, decoded by `DeliveryDecoder`, and answers it.
        pull_sub=PullSub(batch_size=durable.batch, timeout=options.pull_expires_s, batch=True),
        ack_policy=AckPolicy.MANUAL,  # answered by `Answering`, by how the handler ended
        parser=parse_batch,
        include_in_schema=False,
    )
