"""How a message is answered by how its handler ended (`services.subscribers._answer`):
acks, retries with a delay, the last attempt, poison and undecodable messages, and the
heartbeats that keep a long handler's message."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from services.domain import Commands
from services.subscribers import ConsumerOptions, Delivery, Poison, RetryLater
from tests._infra import wait_until
from tests.services.subscribers.conftest import DURABLE, Run, create_model


async def _answered(nc: NATS) -> bool:
    info = await nc.jetstream().consumer_info("CLINAI", DURABLE)
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def test_retry_later_redelivers_then_acks(nc: NATS, commands: Commands, consume: Run) -> None:
    seen: list[int] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.num_delivered)
        if delivery.num_delivered < 3:
            raise RetryLater("not yet", delay_s=0.05)

    consume(handler)
    await create_model(commands)

    async def third() -> bool:
        return seen == [1, 2, 3]

    await wait_until(third, timeout_s=10, what="three deliveries")
    await wait_until(lambda: _answered(nc), timeout_s=5, what="the ack")


async def test_the_last_attempt_is_signalled_and_a_failure_there_ends_the_message(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    options = ConsumerOptions(
        redelivery_s=(2.0,), max_deliver=3, heartbeat_s=0.5, retry_delays_s=(0.05,)
    )
    seen: list[tuple[int, bool]] = []

    async def handler(delivery: Delivery) -> None:
        seen.append((delivery.num_delivered, delivery.last_attempt))
        raise RuntimeError("always fails")  # not a RetryLater: logged, then retried

    consume(handler, options)
    await create_model(commands)

    async def three() -> bool:
        return len(seen) == 3

    await wait_until(three, timeout_s=10, what="three deliveries")
    await wait_until(lambda: _answered(nc), timeout_s=5, what="the message terminated")
    assert seen == [(1, False), (2, False), (3, True)]


async def test_a_handler_longer_than_the_redelivery_time_is_kept_by_heartbeats(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    options = ConsumerOptions(redelivery_s=(1.0,), max_deliver=3, heartbeat_s=0.2)
    seen: list[int] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.num_delivered)
        await asyncio.sleep(2.5)  # the work: 2.5 redelivery times
        done.set()

    consume(handler, options)
    await create_model(commands)
    await asyncio.wait_for(done.wait(), 10)
    await wait_until(lambda: _answered(nc), timeout_s=10, what="the ack")
    assert seen == [1]


async def test_poison_and_undecodable_messages_are_terminated_and_the_next_handled(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    handled: list[str] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.event.aggregate_id)
        if len(handled) == 1:
            raise Poison("never valid")

    consume(handler)
    await nc.jetstream().publish("clinai.model.bad.ModelCreated", b"not json")  # term
    first = await create_model(commands)
    second = await create_model(commands)

    async def both() -> bool:
        return sorted(handled) == sorted([first, second])

    await wait_until(both, timeout_s=10, what="both valid messages")
    # The ack follows the handler's return; nothing comes back (terminated, not nak'ed).
    await wait_until(lambda: _answered(nc), timeout_s=5, what="every message answered")
    assert len(handled) == 2
