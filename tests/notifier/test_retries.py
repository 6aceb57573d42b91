"""Retries and their limits: 5xx retried with the same webhook-id, 4xx not, refused
destinations, disabling a failing endpoint, manual redelivery, rotation grace, and the
retry schedule surviving a restart."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from events import EventStore, WebhookDeliveryQueued, WebhookDisabled, new_id
from projections import webhook_queries
from projections.db import connect
from services.domain.destinations import DestinationPolicy
from services.domain.webhooks import InvalidWebhookError, WebhookCommands
from services.notifier.service import _delivery_ids
from tests._events import job_requested, new_event
from tests._infra import wait_until
from tests.notifier._receiver import Receiver, standard_verify
from tests.notifier._support import ctx_of, deliveries, request_job
from tests.notifier.conftest import Notifiers

ALICE = ctx_of("usr_alice")


class Hooks(msgspec.Struct, frozen=True, kw_only=True):
    """What a retry test drives: the notifiers, alice's subscriptions to endpoints of the
    receiver, her jobs in the log, and the deliveries the read model records (at `dsn`)."""

    notifiers: Notifiers
    store: EventStore
    webhooks: WebhookCommands
    receiver: Receiver
    dsn: str

    async def subscribe(self, path: str, status: int | None = None, host: str = "127.0.0.1") -> str:
        """The id of alice's new subscription to job.created at `path` of the receiver,
        which answers `status` there (200 unless given)."""
        if status is not None:
            self.receiver.status[path] = status
        url = self.receiver.url(path, host=host)
        issued = await self.webhooks.create(ALICE, url=url, events=["job.created"], description="")
        return issued.webhook_id

    async def job(self) -> str:
        """A job of alice's, requested in the log: one job.created to deliver."""
        return await request_job(self.store, "usr_alice")

    async def deliveries(self, endpoint_id: str) -> list[webhook_queries.DeliveryView]:
        return await deliveries(self.dsn, endpoint_id)

    async def final(self, endpoint_id: str, n: int = 1) -> list[webhook_queries.DeliveryView]:
        """The `n` deliveries to `endpoint_id`, once each has succeeded or failed."""
        found: list[webhook_queries.DeliveryView] = []

        async def probe() -> bool:
            found[:] = await self.deliveries(endpoint_id)
            return len(found) == n and all(d.status in ("succeeded", "failed") for d in found)

        await wait_until(probe, what=f"{n} final deliveries to {endpoint_id}")
        return found


@pytest.fixture
def hooks(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    database_url: str,
) -> Hooks:
    return Hooks(
        notifiers=notifiers, store=store, webhooks=webhooks, receiver=receiver, dsn=database_url
    )


async def test_500_is_retried_with_the_same_id_and_400_is_not(hooks: Hooks) -> None:
    receiver = hooks.receiver
    flaky = await hooks.subscribe("/flaky", 500)
    bad = await hooks.subscribe("/bad", 400)
    hooks.notifiers.start()
    await hooks.job()
    await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/flaky"]) >= 2)
    receiver.status["/flaky"] = 200
    got = await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/flaky"]) >= 3)
    ids = {r.msg_id for r in got if r.path == "/flaky"}
    assert len(ids) == 1  # the same webhook-id on every attempt
    [done] = await hooks.final(flaky)
    assert done.status == "succeeded" and done.attempts >= 3
    [refused] = await hooks.final(bad)
    assert refused.status == "failed" and refused.attempts == 1
    assert refused.last_status_code == 400 and refused.next_attempt_at is None
    assert len(receiver.at("/bad")) == 1
    conn = await connect(hooks.dsn)
    try:
        attempts = await webhook_queries.list_attempts(conn, [done.id])
    finally:
        await conn.close()
    outcomes = [a.outcome for a in attempts[done.id]]
    assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) == {"retrying"}
    assert all(a.status_code == 500 for a in attempts[done.id][:-1])


async def test_private_destinations_are_refused(hooks: Hooks) -> None:
    guarded = WebhookCommands(
        hooks.store,
        b"k" * 32,
        policy=DestinationPolicy(),  # no allowlist
        rotation_grace_s=60,
    )
    for url in (
        "http://127.0.0.1/x",
        "http://10.0.0.8/x",
        "http://[::1]/x",
        "http://169.254.169.254/",
    ):
        with pytest.raises(InvalidWebhookError):
            await guarded.create(ALICE, url=url, events=["job.*"], description="")
    with pytest.raises(InvalidWebhookError):
        await guarded.create(ALICE, url="ftp://example.com/", events=["job.*"], description="")
    # A name that resolves to loopback is refused at delivery: no connection is made.
    hook = await hooks.subscribe("/named", host="localhost")
    hooks.notifiers.start(webhook_allow_networks="")
    await hooks.job()
    [refused] = await hooks.final(hook)
    assert refused.status == "failed" and refused.attempts == 1
    assert refused.last_error is not None and "loopback" in refused.last_error
    assert refused.last_status_code is None
    assert hooks.receiver.received == []


async def test_an_endpoint_failing_past_the_threshold_is_disabled_then_reenabled(
    hooks: Hooks,
) -> None:
    receiver = hooks.receiver
    hook = await hooks.subscribe("/down", 503)
    hooks.notifiers.start(webhook_disable_after_failures=3, webhook_disable_after_s=0)
    await hooks.job()

    async def disabled() -> bool:
        history = await hooks.store.read_aggregate("webhook", hook)
        return any(isinstance(s.event, WebhookDisabled) for s in history.events)

    await wait_until(disabled, what="WebhookDisabled")
    assert len(receiver.at("/down")) >= 3
    receiver.status["/down"] = 200
    await hooks.webhooks.enable(ALICE, hook)
    state = await hooks.webhooks.load(ALICE, hook)
    assert state.enabled
    await hooks.job()
    await receiver.wait_for(lambda rs: any(r.path == "/down" for r in rs[-1:]) and len(rs) >= 4)

    async def one_succeeded() -> bool:
        return any(d.status == "succeeded" for d in await hooks.deliveries(hook))

    await wait_until(one_succeeded, what="a delivery after re-enabling")


async def test_manual_redelivery_resends_with_the_same_id(hooks: Hooks) -> None:
    receiver = hooks.receiver
    hook = await hooks.subscribe("/later", 410)
    hooks.notifiers.start()
    await hooks.job()
    [failed] = await hooks.final(hook)
    assert failed.status == "failed"
    receiver.status["/later"] = 204
    await hooks.webhooks.redeliver(ALICE, hook, failed.id)
    got = await receiver.wait_for(lambda rs: len(rs) >= 2)
    assert got[0].msg_id == got[1].msg_id == failed.message_id

    async def resent() -> bool:
        [d] = await hooks.deliveries(hook)
        return d.status == "succeeded" and d.attempts == 2

    await wait_until(resent, what="the redelivery recorded")


async def test_both_secrets_sign_during_the_rotation_grace(hooks: Hooks) -> None:
    created = await hooks.webhooks.create(
        ALICE, url=hooks.receiver.url("/rot"), events=["job.created"], description=""
    )
    rotated = await hooks.webhooks.rotate(ALICE, created.webhook_id)
    assert rotated.secret != created.secret and rotated.generation == 2
    hooks.notifiers.start()
    await hooks.job()
    [got] = await hooks.receiver.wait_for(lambda rs: len(rs) >= 1)
    assert len(got.signatures) == 2
    assert standard_verify(created.secret, got) and standard_verify(rotated.secret, got)


async def test_retry_schedule_survives_a_restart(hooks: Hooks) -> None:
    receiver, notifiers = hooks.receiver, hooks.notifiers
    hook = await hooks.subscribe("/restart", 500)
    # A long backoff: the retry is due after the first notifier has stopped.
    first = notifiers.start(webhook_retry_base_s=2.0, webhook_retry_max_delay_s=2.0)
    await hooks.job()

    async def retrying() -> bool:
        found = await hooks.deliveries(hook)
        return len(found) == 1 and found[0].status == "retrying"

    await wait_until(retrying, what="a delivery waiting for its retry")
    await notifiers.stop(first)
    assert len(receiver.at("/restart")) == 1
    receiver.status["/restart"] = 200
    notifiers.start()
    got = await receiver.wait_for(lambda rs: len(rs) >= 2)
    assert got[0].msg_id == got[1].msg_id
    [done] = await hooks.final(hook)
    assert done.status == "succeeded" and done.attempts == 2


async def test_a_delivery_queued_by_a_try_whose_answer_was_lost_is_sent(hooks: Hooks) -> None:
    """An event comes again after a try stored its delivery's Queued but lost the answer
    (a NATS stream leader killed mid-append): the delivery is sent, not left queued."""
    hook = await hooks.subscribe("/lost")
    hooks.notifiers.start()
    await hooks.job()
    await hooks.final(hook)  # the notifier consumes, and appends nothing more now
    job_id = new_id("job")
    source = job_requested(job_id, "usr_alice", input_key=f"inputs/{job_id}")
    delivery_id, message_id = _delivery_ids(hook, source.id)
    source_seq = await hooks.store.stream_last_seq() + 2  # after the Queued
    queued = new_event(
        WebhookDeliveryQueued,
        delivery_id,
        actor="notifier",
        endpoint_id=hook,
        owner="usr_alice",
        message_id=message_id,
        event_type="job.created",
        source_seq=source_seq,
        source_id=source.id,
        resource_id=job_id,
        url=hooks.receiver.url("/lost"),
    )
    await hooks.store.append(queued, expected=0)
    assert await hooks.store.append(source, expected=0) == source_seq, "another append between"
    got = await hooks.receiver.wait_for(lambda rs: any(r.msg_id == message_id for r in rs))
    sent = next(r for r in got if r.msg_id == message_id)
    assert sent.json["data"]["id"] == job_id  # type: ignore[index]
    assert all(d.status == "succeeded" for d in await hooks.final(hook, 2))


async def test_a_slow_endpoint_does_not_hold_up_the_others(hooks: Hooks) -> None:
    receiver = hooks.receiver
    receiver.hold["/slow"] = release = asyncio.Event()
    await hooks.subscribe("/slow")
    await hooks.subscribe("/fast")
    hooks.notifiers.start()
    try:
        for _ in range(6):
            await hooks.job()
        # Every event reaches the fast endpoint while the slow one still sits on its
        # first requests (it has not answered any).
        await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/fast"]) >= 6)
        assert len(receiver.at("/slow")) < 6  # its requests are still in flight, capped
    finally:
        release.set()
    await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/slow"]) >= 6)
