"""A service's durable as FastStream routes: `durable_route` is the `NatsRoute` of one
handler on it, `durable_router` the `NatsRouter` that answers its messages."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRoute, NatsRouter, PullSub
from nats.js.api import ConsumerConfig

from services.subscribers._answer import Answering
from services.subscribers._decode import DeliveryDecoder
from services.subscribers.delivery import Handler
from services.subscribers.options import ConsumerOptions

__all__ = ["Durable", "durable_route", "durable_router"]


class Durable(msgspec.Struct, frozen=True, kw_only=True):
    """One durable consumer on `stream`, filtered to `subjects`: a service's share of
    the log, whichever of its processes takes each message."""

    stream: str
    name: str
    subjects: tuple[str, ...]
    options: ConsumerOptions = ConsumerOptions()

    def __post_init__(self) -> None:
        if not self.subjects:
            raise ValueError(f"durable {self.name!r} needs at least one filter subject")


def durable_route(handler: Handler, durable: Durable, *, concurrency: int) -> NatsRoute:
    """`handler` on `durable`, at most `concurrency` messages at a time. Messages come
    one per pull request: a request for more waits on the server until it has them all
    (or expires), which would hold a lone message back."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return NatsRoute(
        handler,
        "",
        config=ConsumerConfig(filter_subjects=list(durable.subjects)),
        durable=durable.name,
        stream=JStream(durable.stream, declare=False),
        pull_sub=PullSub(batch_size=1, timeout=durable.options.pull_expires_s),
        max_workers=concurrency,
        ack_policy=AckPolicy.MANUAL,  # answered by `Answering`, by how the handler ended
        decoder=DeliveryDecoder(durable.options.max_deliver),
        include_in_schema=False,
    )


def durable_router(durable: Durable, routes: Sequence[NatsRoute]) -> NatsRouter:
    """The routes on `durable`, their messages answered by `Answering`."""
    return NatsRouter(handlers=routes, middlewares=[Answering(durable.name, durable.options)])
