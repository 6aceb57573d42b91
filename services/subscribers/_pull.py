"""FastStream's JetStream batch pull subscriber, pulling the way a durable here needs.

`PullSub(batch=True)` runs FastStream's pipeline (context, middlewares, parser, the
handler call) once per fetched batch; `Answering` then hands each message of the batch
to the handler in a task of its own. FastStream's batch loop, though, fetches again
until the batch is full or the pull times out, so a lone message would wait up to
`pull_expires_s`; `FastBatchPull` hands over whatever one fetch returned (a request is
answered as soon as a message is there, with up to `batch_size`), and waits
`ConsumerOptions.pull_linger_s` before the next fetch if the batch was not full. It
also makes its log context once, not per batch: nothing is logged per message (the
broker has no logger)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import nats.errors
from faststream.message import StreamMessage
from faststream.nats import NatsRouter
from faststream.nats.subscriber.usecases.stream_pull_subscriber import (
    BatchPullStreamSubscriber,
)
from nats.aio.msg import Msg
from nats.js.errors import ServiceUnavailableError

__all__ = ["FastBatchPull", "use_fast_batch_pull"]

_LOG_CONTEXT = {"subject": "", "queue": "", "stream": "", "message_id": ""}


class FastBatchPull(BatchPullStreamSubscriber):
    """`BatchPullStreamSubscriber` with one fetch per batch; the subscription, the
    fetch and the pipeline are FastStream's."""

    __slots__ = ()
    linger_s: float = 0.0  # `ConsumerOptions.pull_linger_s`, set by `use_fast_batch_pull`

    async def _consume_pull(self) -> None:
        subscription = self.subscription
        if subscription is None:
            raise RuntimeError("FastBatchPull: the subscription is not made yet")
        batch, timeout = self.pull_sub.batch_size, self.pull_sub.timeout
        while self.running:
            messages: list[Msg] = []
            with contextlib.suppress(
                nats.errors.TimeoutError,
                nats.errors.ConnectionClosedError,
                ServiceUnavailableError,
            ):
                messages = await subscription.fetch(batch=batch, timeout=timeout)
            if messages and self.running:
                await self.consume(messages)
            if self.linger_s and len(messages) < batch:
                await asyncio.sleep(self.linger_s)

    def get_log_context(self, message: StreamMessage[list[Msg]] | None) -> dict[str, str]:
        return _LOG_CONTEXT


def use_fast_batch_pull(router: NatsRouter, linger_s: float) -> None:
    """Makes the router's batch pull subscribers `FastBatchPull` (a subclass with the
    same slots: only the methods above change), waiting `linger_s` after a pull that
    did not fill its batch."""
    for subscriber in router.subscribers:
        if type(subscriber) is BatchPullStreamSubscriber:
            subscriber.__class__ = FastBatchPull
            cast("FastBatchPull", subscriber).linger_s = linger_s
