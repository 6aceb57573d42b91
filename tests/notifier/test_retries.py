"""Retries and their limits: 5xx retried with the same webhook-id, 4xx not, refused
destinations, disabling a failing endpoint, manual redelivery, rotation grace, and the
retry schedule surviving a restart."""

from __future__ import annotations

import asyncio

import pytest

from events import EventStore, WebhookDisabled
from projections import webhook_queries
from projections.db import connect
from services.domain.destinations import DestinationPolicy
from services.domain.webhooks import InvalidWebhookError, WebhookCommands
from services.settings import Settings
from tests._infra import wait_until
from tests.notifier._receiver import Receiver, standard_verify
from tests.notifier._support import ctx_of, deliveries, request_job
from tests.notifier.conftest import Notifiers

ALICE = ctx_of("usr_alice")


async def _subscribe(webhooks: WebhookCommands, url: str, events: str = "job.created") -> str:
    issued = await webhooks.create(ALICE, url=url, events=[events], description="")
    return issued.webhook_id


async def _final(dsn: str, endpoint_id: str, n: int = 1) -> list[webhook_queries.DeliveryView]:
    found: list[webhook_queries.DeliveryView] = []

    async def probe() -> bool:
        found[:] = await deliveries(dsn, endpoint_id)
        return len(found) == n and all(d.status in ("succeeded", "failed") for d in found)

    await wait_until(probe, what=f"{n} final deliveries to {endpoint_id}")
    return found


async def test_500_is_retried_with_the_same_id_and_400_is_not(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    settings: Settings,
) -> None:
    assert settings.database_url is not None
    receiver.status["/flaky"] = 500
    receiver.status["/bad"] = 400
    flaky = await _subscribe(webhooks, receiver.url("/flaky"))
    bad = await _subscribe(webhooks, receiver.url("/bad"))
    notifiers.start()
    await request_job(store, "usr_alice")
    await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/flaky"]) >= 2)
    receiver.status["/flaky"] = 200
    got = await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/flaky"]) >= 3)
    ids = {r.msg_id for r in got if r.path == "/flaky"}
    assert len(ids) == 1  # the same webhook-id on every attempt
    [done] = await _final(settings.database_url, flaky)
    assert done.status == "succeeded" and done.attempts >= 3
    [refused] = await _final(settings.database_url, bad)
    assert refused.status == "failed" and refused.attempts == 1
    assert refused.last_status_code == 400 and refused.next_attempt_at is None
    assert len(receiver.at("/bad")) == 1
    conn = await connect(settings.database_url)
    try:
        attempts = await webhook_queries.list_attempts(conn, [done.id])
    finally:
        await conn.close()
    outcomes = [a.outcome for a in attempts[done.id]]
    assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) == {"retrying"}
    assert all(a.status_code == 500 for a in attempts[done.id][:-1])


async def test_private_destinations_are_refused(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    settings: Settings,
) -> None:
    assert settings.database_url is not None
    guarded = WebhookCommands(
        store,
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
    hook = await _subscribe(webhooks, receiver.url("/named", host="localhost"))
    notifiers.start(webhook_allow_networks="")
    await request_job(store, "usr_alice")
    [refused] = await _final(settings.database_url, hook)
    assert refused.status == "failed" and refused.attempts == 1
    assert refused.last_error is not None and "loopback" in refused.last_error
    assert refused.last_status_code is None
    assert receiver.received == []


async def test_an_endpoint_failing_past_the_threshold_is_disabled_then_reenabled(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    settings: Settings,
) -> None:
    assert settings.database_url is not None
    receiver.status["/down"] = 503
    hook = await _subscribe(webhooks, receiver.url("/down"))
    notifiers.start(webhook_disable_after_failures=3, webhook_disable_after_s=0)
    await request_job(store, "usr_alice")

    async def disabled() -> bool:
        history = await store.read_aggregate("webhook", hook)
        return any(isinstance(s.event, WebhookDisabled) for s in history.events)

    await wait_until(disabled, what="WebhookDisabled")
    assert len(receiver.at("/down")) >= 3
    receiver.status["/down"] = 200
    await webhooks.enable(ALICE, hook)
    state = await webhooks.load(ALICE, hook)
    assert state.enabled
    await request_job(store, "usr_alice")
    await receiver.wait_for(lambda rs: any(r.path == "/down" for r in rs[-1:]) and len(rs) >= 4)

    async def one_succeeded() -> bool:
        return any(
            d.status == "succeeded" for d in await deliveries(settings.database_url or "", hook)
        )

    await wait_until(one_succeeded, what="a delivery after re-enabling")


async def test_manual_redelivery_resends_with_the_same_id(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    settings: Settings,
) -> None:
    assert settings.database_url is not None
    receiver.status["/later"] = 410
    hook = await _subscribe(webhooks, receiver.url("/later"))
    notifiers.start()
    await request_job(store, "usr_alice")
    [failed] = await _final(settings.database_url, hook)
    assert failed.status == "failed"
    receiver.status["/later"] = 204
    await webhooks.redeliver(ALICE, hook, failed.id)
    got = await receiver.wait_for(lambda rs: len(rs) >= 2)
    assert got[0].msg_id == got[1].msg_id == failed.message_id

    async def resent() -> bool:
        [d] = await deliveries(settings.database_url or "", hook)
        return d.status == "succeeded" and d.attempts == 2

    await wait_until(resent, what="the redelivery recorded")


async def test_both_secrets_sign_during_the_rotation_grace(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
) -> None:
    created = await webhooks.create(
        ALICE, url=receiver.url("/rot"), events=["job.created"], description=""
    )
    rotated = await webhooks.rotate(ALICE, created.webhook_id)
    assert rotated.secret != created.secret and rotated.generation == 2
    notifiers.start()
    await request_job(store, "usr_alice")
    [got] = await receiver.wait_for(lambda rs: len(rs) >= 1)
    assert len(got.signatures) == 2
    assert standard_verify(created.secret, got) and standard_verify(rotated.secret, got)


async def test_retry_schedule_survives_a_restart(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    settings: Settings,
) -> None:
    assert settings.database_url is not None
    receiver.status["/restart"] = 500
    hook = await _subscribe(webhooks, receiver.url("/restart"))
    # A long backoff: the retry is due after the first notifier has stopped.
    first = notifiers.start(webhook_retry_base_s=2.0, webhook_retry_max_delay_s=2.0)
    await request_job(store, "usr_alice")

    async def retrying() -> bool:
        found = await deliveries(settings.database_url or "", hook)
        return len(found) == 1 and found[0].status == "retrying"

    await wait_until(retrying, what="a delivery waiting for its retry")
    await notifiers.stop(first)
    assert len(receiver.at("/restart")) == 1
    receiver.status["/restart"] = 200
    notifiers.start()
    got = await receiver.wait_for(lambda rs: len(rs) >= 2)
    assert got[0].msg_id == got[1].msg_id
    [done] = await _final(settings.database_url, hook)
    assert done.status == "succeeded" and done.attempts == 2


async def test_a_slow_endpoint_does_not_hold_up_the_others(
    notifiers: Notifiers,
    store: EventStore,
    webhooks: WebhookCommands,
    receiver: Receiver,
    settings: Settings,
) -> None:
    receiver.hold["/slow"] = release = asyncio.Event()
    await _subscribe(webhooks, receiver.url("/slow"))
    await _subscribe(webhooks, receiver.url("/fast"))
    notifiers.start()
    try:
        for _ in range(6):
            await request_job(store, "usr_alice")
        # Every event reaches the fast endpoint while the slow one still sits on its
        # first requests (it has not answered any).
        await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/fast"]) >= 6)
        assert len(receiver.at("/slow")) < 6  # its requests are still in flight, capped
    finally:
        release.set()
    await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/slow"]) >= 6)
