"""FastStream's JetStream batch pull subscriber, pulling the way a durable here needs.

`PullSub(batch=True)` runs FastStream's pipeline (context, middlewares, parser, the
handler call) once per batch; `Answering` then hands each message of the batch to the
handler in a task of its own. FastStream's batch loop calls nats-py's `fetch`, which
sends a pull request per batch (two when none is waiting: a no-wait probe, then a
waiting one) and waits for its answer, then fetches again until the batch is full or
the pull times out. `FastBatchPull` keeps the subscription, the pipeline and the
middlewares FastStream's, and asks for messages with `StandingPulls` instead: requests
stay open on the server, sized by the handlers' free room, and each batch is whatever
arrived since the last one. It also makes its log context once, not per batch: nothing
is logged per message (the broker has no logger)."""

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

from services.subscribers._standing import StandingPulls

__all__ = ["FastBatchPull", "use_fast_batch_pull"]

_LOG_CONTEXT = {"subject": "", "queue": "", "stream": "", "message_id": ""}


class FastBatchPull(BatchPullStreamSubscriber):
    """`BatchPullStreamSubscriber` fed by standing pull requests."""

    __slots__ = ()
    pulls: StandingPulls  # set by `use_fast_batch_pull`
    linger_s: float = 0.0  # `ConsumerOptions.pull_linger_s`

    async def _create_subscription(self) -> None:
        if self.subscription:
            return
        pulls = self.pulls
        inbox = pulls.attach(self.connection)
        # A plain inbox subscription where FastStream keeps a nats-py `PullSubscription`:
        # all the base class does with it is unsubscribe.
        self.subscription = await self.connection.subscribe(inbox, cb=pulls.on_msg)  # type: ignore[assignment]
        pulls.top_up()
        self.add_task(self._consume_pull)

    async def _consume_pull(self) -> None:
        pulls, linger_s = self.pulls, self.linger_s
        while self.running:
            messages = await pulls.take(linger_s)
            try:
                if messages:
                    await self.consume(messages)
            finally:
                pulls.handed_over()

    async def stop(self) -> None:
        """No more requests; what arrives meanwhile, and what was received and not yet
        handed over, is nak'ed for another process."""
        pulls = self.pulls
        pulls.closing = True
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await asyncio.wait_for(subscription.drain(), pulls.heartbeat_s)  # type: ignore[attr-defined]
            with contextlib.suppress(nats.errors.Error):  # drained already, or the drain timed out
                await subscription.unsubscribe()
        await super().stop()
        for msg in pulls.hand_back():
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()

    def get_log_context(self, message: StreamMessage[list[Msg]] | None) -> dict[str, str]:
        return _LOG_CONTEXT


def use_fast_batch_pull(router: NatsRouter, pulls: StandingPulls, linger_s: float) -> None:
    """Makes the router's batch pull subscriber `FastBatchPull` (a subclass with the
    same slots: only the methods above change), asking for messages with `pulls` and
    waiting `linger_s` for more after a batch that is not full."""
    subscribers = [s for s in router.subscribers if type(s) is BatchPullStreamSubscriber]
    if len(subscribers) != 1:
        raise ValueError(f"a durable takes one batch pull route, got {len(subscribers)}")
    subscriber = subscribers[0]
    subscriber.__class__ = FastBatchPull
    fast = cast("FastBatchPull", subscriber)
    fast.pulls, fast.linger_s = pulls, linger_s
