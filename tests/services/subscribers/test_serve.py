"""Running a durable (`services.subscribers.serve`, `route`): concurrency, stopping,
scale-out on one durable, and a durable made again after it was deleted."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS

from services.domain import Commands
from services.subscribers import ConsumerOptions, Delivery
from tests._infra import wait_until
from tests.services._support import FAST_CONSUMER
from tests.services.subscribers.conftest import DURABLE, Run, create_model


async def test_stopping_naks_the_running_message_for_another_process(
    commands: Commands, consume: Run
) -> None:
    started = asyncio.Event()
    deliveries: list[int] = []

    async def slow(delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        started.set()
        await asyncio.Event().wait()  # never finishes by itself

    stop = consume(slow)
    await create_model(commands)
    await asyncio.wait_for(started.wait(), 10)

    async def fast(delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)

    stop.set()  # the grace period runs out; the message is nak'ed, not left to time out
    consume(fast)

    async def redelivered() -> bool:
        return deliveries == [1, 2]

    await wait_until(redelivered, timeout_s=FAST_CONSUMER.stop_grace_s + 1.5, what="redelivery")


async def test_a_message_is_taken_only_when_a_handler_has_room(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    # A redelivery time far beyond the test: only a nak brings the messages back.
    options = ConsumerOptions(
        redelivery_s=(30.0,), max_deliver=3, heartbeat_s=0.5, stop_grace_s=0.2
    )
    seen: list[str] = []

    async def stuck(delivery: Delivery) -> None:
        seen.append(delivery.event.aggregate_id)
        await asyncio.Event().wait()

    stop = consume(stuck, options, concurrency=1)
    created = {await create_model(commands) for _ in range(2)}

    await wait_until(lambda: bool(seen), timeout_s=10, what="the first message taken")
    again: list[str] = []

    async def fast(delivery: Delivery) -> None:
        again.append(delivery.event.aggregate_id)

    consume(fast, options)  # a second process on the durable takes the other at once
    await wait_until(
        lambda: set(again) == created - set(seen), timeout_s=5, what="the other message"
    )
    stop.set()  # the stuck handler's message is nak'ed and handed on
    await wait_until(lambda: set(again) == created, timeout_s=5, what="both messages handed on")
    assert len(seen) == 1


@pytest.mark.parametrize("concurrency", [2, 8])
async def test_at_most_concurrency_handlers_run_at_once(
    commands: Commands, consume: Run, concurrency: int
) -> None:
    handled: list[str] = []
    running = 0
    most = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)  # the work
        running -= 1
        handled.append(delivery.event.aggregate_id)

    # Created before the consumer starts: they come in batches (half the concurrency).
    created = set(await asyncio.gather(*(create_model(commands) for _ in range(24))))
    consume(handler, concurrency=concurrency)

    async def all_handled() -> bool:
        return set(handled) == created

    await wait_until(all_handled, timeout_s=10, what="every message handled")
    assert len(handled) == len(created) and most == concurrency


async def test_processes_on_one_durable_share_its_messages(
    commands: Commands, consume: Run
) -> None:
    by: dict[str, list[str]] = {"a": [], "b": []}

    def handler(name: str) -> object:
        async def handle(delivery: Delivery) -> None:
            await asyncio.sleep(0.05)  # busy: the other process takes the next one
            by[name].append(delivery.event.aggregate_id)

        return handle

    consume(handler("a"))
    consume(handler("b"))
    created = set(await asyncio.gather(*(create_model(commands) for _ in range(12))))

    async def all_handled() -> bool:
        return set(by["a"]) | set(by["b"]) == created

    await wait_until(all_handled, timeout_s=10, what="every message handled")
    assert by["a"] and by["b"]
    assert not set(by["a"]) & set(by["b"])  # each message to one process


async def test_a_deleted_consumer_is_made_again_and_messages_flow(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    handled: list[str] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.event.aggregate_id)

    consume(handler)
    first = await create_model(commands)

    async def first_handled() -> bool:
        return handled == [first]

    await wait_until(first_handled, timeout_s=10, what="the first message")
    await nc.jetstream().delete_consumer("CLINAI", DURABLE)
    second = await create_model(commands)

    async def second_handled() -> bool:
        return second in handled

    # Made again with DeliverPolicy.ALL: the first message comes again too, which every
    # handler tolerates (redelivery is normal).
    await wait_until(second_handled, timeout_s=10, what="a message after the consumer was deleted")
