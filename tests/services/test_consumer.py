"""The shared durable-consumer plumbing: acks, retries, poison messages, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS

from events import EventStore
from services.consumer import ConsumerOptions, Delivery, Poison, RetryLater, run_consumer
from services.domain import Commands
from services.settings import Settings
from tests._infra import wait_until
from tests.services._support import ADMIN, FAST_CONSUMER

SUBJECTS = ("clinai.model.*.ModelCreated",)

Run = Callable[..., asyncio.Event]


@pytest.fixture
async def consume(nc: NATS, settings: Settings, store: EventStore) -> AsyncIterator[Run]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(
        handler: Callable[[Delivery], Awaitable[None]], options: ConsumerOptions = FAST_CONSUMER
    ) -> asyncio.Event:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_consumer(
                nc,
                stream=settings.stream_name,
                durable="test",
                filter_subjects=SUBJECTS,
                handler=handler,
                concurrency=2,
                stop=stop,
                options=options,
            )
        )
        running.append((stop, task))
        return stop

    yield start
    for stop, task in running:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def _create_model(commands: Commands) -> str:
    model_id, _ = await commands.create_model(
        ADMIN, name=f"m-{uuid.uuid4().hex[:8]}", description="", visibility="private"
    )
    return model_id


async def test_retry_later_redelivers_then_acks(commands: Commands, consume: Run) -> None:
    seen: list[int] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.num_delivered)
        if delivery.num_delivered < 3:
            raise RetryLater("not yet", delay_s=0.05)

    consume(handler)
    await _create_model(commands)

    async def third() -> bool:
        return seen == [1, 2, 3]

    await wait_until(third, timeout_s=10, what="three deliveries")


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
    await _create_model(commands)
    await asyncio.wait_for(done.wait(), 10)

    async def acked() -> bool:
        info = await nc.jetstream().consumer_info("CLINAI", "test")
        return info.num_ack_pending == 0

    await wait_until(acked, timeout_s=10, what="the ack")
    assert seen == [1]


async def test_poison_is_terminated_and_the_next_message_handled(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    handled: list[str] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.event.aggregate_id)
        if len(handled) == 1:
            raise Poison("never valid")

    consume(handler)
    js = nc.jetstream()
    await js.publish("clinai.model.bad.ModelCreated", b"not json")  # undecodable: term
    first = await _create_model(commands)
    second = await _create_model(commands)

    async def both() -> bool:
        return handled == [first, second]

    await wait_until(both, timeout_s=10, what="both valid messages")

    async def all_answered() -> bool:  # the ack follows the handler's return
        info = await js.consumer_info("CLINAI", "test")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_until(all_answered, timeout_s=5, what="every message acked or terminated")


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
    await _create_model(commands)
    await asyncio.wait_for(started.wait(), 10)
    stop.set()  # the grace period runs out; the message is nak'ed, not left to time out

    async def fast(delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)

    consume(fast)

    async def redelivered() -> bool:
        return deliveries == [1, 2]

    await wait_until(redelivered, timeout_s=FAST_CONSUMER.stop_grace_s + 1.5, what="redelivery")


async def test_messages_flow_in_batches_within_the_concurrency(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    handled: list[str] = []
    running = 0
    most = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)  # the work
        running -= 1
        handled.append(delivery.event.aggregate_id)

    consume(handler)  # concurrency 2
    created = set(await asyncio.gather(*(_create_model(commands) for _ in range(12))))

    async def all_handled() -> bool:
        return set(handled) == created

    await wait_until(all_handled, timeout_s=10, what="every message handled")
    assert len(handled) == len(created) and most == 2


async def test_a_deleted_consumer_is_made_again_and_messages_flow(
    nc: NATS, commands: Commands, consume: Run
) -> None:
    handled: list[str] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.event.aggregate_id)

    consume(handler)
    first = await _create_model(commands)

    async def first_handled() -> bool:
        return handled == [first]

    await wait_until(first_handled, timeout_s=10, what="the first message")
    await nc.jetstream().delete_consumer("CLINAI", "test")  # its pull requests end (409)
    second = await _create_model(commands)

    async def second_handled() -> bool:
        return second in handled

    # Made again with DeliverPolicy.ALL: the first message comes again too, which every
    # handler tolerates (redelivery is normal).
    await wait_until(second_handled, timeout_s=10, what="a message after the consumer was deleted")


async def test_handlers_busier_than_the_heartbeat_do_not_look_like_lost_requests(
    commands: Commands, consume: Run, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[str] = []
    beat = FAST_CONSUMER.idle_heartbeat_s

    async def slow(delivery: Delivery) -> None:
        await asyncio.sleep(3 * beat)  # every slot busy: no request open, nothing heard
        handled.append(delivery.event.aggregate_id)

    consume(slow)  # concurrency 2
    created = [await _create_model(commands) for _ in range(2)]

    async def all_handled() -> bool:
        return sorted(handled) == sorted(created)

    await wait_until(all_handled, timeout_s=10, what="both messages handled")
    # Not a synchronisation: the window in which a stale silence would be taken for lost
    # requests (the checks run every `beat`; the server's first heartbeat comes after one).
    await asyncio.sleep(3 * beat)
    assert not [r for r in caplog.records if "pull requests lost" in r.getMessage()]
