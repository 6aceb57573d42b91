"""The one place a message is answered: a FastStream middleware around every handler
call that runs it (at most `concurrency` at once), sends `in_progress` while it runs,
then acks, naks with a delay, or terminates the message by how the handler ended."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from faststream import ContextRepo
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from nats.aio.msg import Msg

from services.subscribers._decode import DeliveryDecoder, parse_message
from services.subscribers.delivery import Poison, RetryLater
from services.subscribers.options import ConsumerOptions

__all__ = ["Answering"]

log = logging.getLogger("clinai.consumer")

CallNext = Any  # FastStream's `AsyncFuncAny`: the handler call behind this middleware


class Answering:
    """The middleware FastStream builds per batch (`NatsRouter(middlewares=[...])`)
    for one durable: each message's handler runs in a task of its own, at most
    `concurrency` at a time, so that FastStream goes on pulling while handlers run (its
    pull loop hands a batch over and waits only for room, not for the handlers)."""

    def __init__(self, durable: str, options: ConsumerOptions, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.durable = durable
        self.options = options
        self.decoder = DeliveryDecoder(options.max_deliver)
        self.concurrency = concurrency
        self._room = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._beats = _Heartbeats(options.heartbeat_s)
        self.on_room: Callable[[], None] | None = None  # a handler ended: room for one more

    def room(self) -> int:
        """Handlers that could start now."""
        return self.concurrency - len(self._running)

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _Answer:
        return _Answer(msg, context=context, answering=self)

    async def close(self) -> None:
        """Running handlers get `stop_grace_s` to finish; the others are cancelled and
        their messages nak'ed for another process."""
        if not self._running:
            self._beats.close()
            return
        _, pending = await asyncio.wait(set(self._running), timeout=self.options.stop_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        self._beats.close()

    async def start(self, call_next: CallNext, msg: StreamMessage[Any]) -> None:
        try:
            await self._room.acquire()
        except asyncio.CancelledError:  # stopping before it started: hand it on at once
            await asyncio.shield(_respond(msg.raw_message.nak()))
            raise
        task = asyncio.get_running_loop().create_task(self._answer(call_next, msg))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._room.release()
        if self.on_room is not None:
            self.on_room()

    async def _answer(self, call_next: CallNext, msg: StreamMessage[Any]) -> None:
        raw: Msg = msg.raw_message
        durable = self.durable
        meta = raw.metadata
        num_delivered = meta.num_delivered or 1
        seq = meta.sequence.stream
        beats = self._beats
        beats.add(raw)
        try:
            await call_next(msg)
        except Poison as err:
            log.error("consumer %s: terminating message seq %s: %s", durable, seq, err.reason)
            await _respond(raw.term())
        except RetryLater as err:
            await _nak_or_give_up(raw, self, seq, num_delivered, err.reason, err.delay_s)
        except asyncio.CancelledError:
            # Stopping: hand the message to another process right away.
            await asyncio.shield(_respond(raw.nak()))
            raise
        except Exception as err:
            log.exception("consumer %s: handler failed on message seq %s", durable, seq)
            await _nak_or_give_up(raw, self, seq, num_delivered, repr(err), None)
        else:
            await _respond(raw.ack())
        finally:
            beats.discard(raw)


class _Answer(BaseMiddleware[Any, Any]):
    __slots__ = ("_answering",)

    def __init__(self, msg: Any, /, *, context: ContextRepo, answering: Answering) -> None:
        super().__init__(msg, context=context)
        self._answering = answering

    async def consume_scope(self, call_next: CallNext, batch: StreamMessage[list[Msg]]) -> Any:
        """A fetched batch: each message goes to the handler (`call_next`) on its own,
        decoded by the one event decoder, as room frees up."""
        answering, raws = self._answering, batch.raw_message
        for index, raw in enumerate(raws):
            msg = parse_message(raw)
            msg.set_decoder(answering.decoder)
            try:
                await answering.start(call_next, msg)
            except asyncio.CancelledError:  # stopping: the rest goes to another process
                for rest in raws[index + 1 :]:
                    await asyncio.shield(_respond(rest.nak()))
                raise
        return None


async def _nak_or_give_up(
    msg: Msg,
    answering: Answering,
    seq: int,
    num_delivered: int,
    reason: str,
    delay_s: float | None,
) -> None:
    options, durable = answering.options, answering.durable
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


class _Heartbeats:
    """`in_progress` for every message whose handler runs, at least every `interval_s`
    (the first within `interval_s` of its start): one timer for all of them, ticking
    every quarter interval while any runs, not a timer per message (almost every
    handler is done long before its first beat)."""

    __slots__ = ("_heard", "_interval_s", "_loop", "_sending", "_tick_s", "_timer")

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._tick_s = interval_s / 4
        # id(running message) -> it and when it last beat (or began); a Msg is no key
        self._heard: dict[int, tuple[Msg, float]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, msg: Msg) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._heard[id(msg)] = (msg, loop.time())
        if self._timer is None:
            self._timer = loop.call_later(self._tick_s, self._tick)

    def discard(self, msg: Msg) -> None:
        self._heard.pop(id(msg), None)  # a beat being sent for it now changes nothing

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._sending:
            task.cancel()

    def _tick(self) -> None:
        loop, heard = self._loop, self._heard
        if loop is None or not heard:
            self._timer = None
            return
        now = loop.time()
        # Beat what would go a tick past its interval without one: beats at least
        # every interval, at most every three quarters of it.
        due_before = now - (self._interval_s - self._tick_s)
        due = [msg for msg, last in heard.values() if last <= due_before]
        if due:
            for msg in due:
                heard[id(msg)] = (msg, now)
            task = loop.create_task(_send_beats(due))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._timer = loop.call_later(self._tick_s, self._tick)


async def _send_beats(msgs: list[Msg]) -> None:
    for msg in msgs:
        try:
            await msg.in_progress()
        except nats.errors.Error as err:
            log.warning("in_progress heartbeat failed: %r", err)
