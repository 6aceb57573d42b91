"""The notifier end to end: real NATS, Postgres, projector, notifier and a loopback
receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

from events import EventStore, JobAborted, JobWebhook
from services.domain.signing import default_secret, master_key
from services.domain.webhooks import WebhookCommands
from services.settings import Settings
from tests._events import new_event
from tests._infra import wait_until
from tests.notifier._receiver import Receiver, standard_verify
from tests.notifier._support import ctx_of, deliveries, job_lifecycle, request_job
from tests.notifier.conftest import Notifiers


async def test_signed_deliveries_of_subscribed_own_events_only(
    notifiers: Notifiers, store: EventStore, webhooks: WebhookCommands, receiver: Receiver
) -> None:
    everything = await webhooks.create(
        ctx_of("usr_alice"), url=receiver.url("/all"), events=["job.*"], description=""
    )
    built = await webhooks.create(
        ctx_of("usr_alice"), url=receiver.url("/built"), events=["version.built"], description=""
    )
    notifiers.start()
    await job_lifecycle(store, "usr_bob")  # another user's job: never delivered to alice
    job_id = await job_lifecycle(store, "usr_alice")
    got = await receiver.wait_for(lambda rs: len([r for r in rs if r.path == "/all"]) >= 3)
    mine = [r for r in got if r.path == "/all"]
    # Deliveries are concurrent (at least once, unordered), so compare as a set.
    assert sorted(str(r.type) for r in mine) == ["job.created", "job.started", "job.succeeded"]
    for r in mine:
        assert standard_verify(everything.secret, r)
        assert not standard_verify(built.secret, r)
        data = r.json["data"]
        assert isinstance(data, dict) and data["id"] == job_id and data["owner"] == "usr_alice"
        assert "input_key" not in data
    succeeded = next(r for r in mine if r.type == "job.succeeded")
    assert succeeded.json["data"]["status"] == "succeeded"  # type: ignore[index]
    started = next(r for r in mine if r.type == "job.started")
    assert started.json["data"]["status"] == "running"  # as of that event, not now
    assert len({r.msg_id for r in mine}) == 3
    # Every attempt is in the log and the projection; nothing else was delivered.
    dsn = notifiers.settings.database_url
    assert dsn is not None
    await wait_until(
        lambda: _all_succeeded(dsn, everything.webhook_id, 3), what="3 succeeded deliveries"
    )
    assert receiver.at("/built") == []
    assert len(receiver.received) == 3


async def _all_succeeded(dsn: str, endpoint_id: str, n: int) -> bool:
    found = await deliveries(dsn, endpoint_id)
    return len(found) == n and all(d.status == "succeeded" for d in found)


async def test_a_jobs_own_webhook_is_signed_with_the_owners_default_secret(
    notifiers: Notifiers, store: EventStore, receiver: Receiver, settings: Settings
) -> None:
    notifiers.start()
    hook = JobWebhook(url=receiver.url("/job"), events=("completed",))
    job_id = await job_lifecycle(store, "usr_carol", webhook=hook)
    got = await receiver.wait_for(lambda rs: len(rs) >= 1)
    assert [r.type for r in got] == ["job.succeeded"]
    assert standard_verify(default_secret(master_key(settings), "usr_carol"), got[0])
    assert not standard_verify(default_secret(master_key(settings), "usr_bob"), got[0])
    dsn = settings.database_url
    assert dsn is not None
    await wait_until(
        lambda: _all_succeeded(dsn, f"jwh_{job_id}", 1), what="the job webhook recorded"
    )


async def test_a_job_aborted_at_its_deadline_is_delivered_as_completed(
    notifiers: Notifiers, store: EventStore, receiver: Receiver
) -> None:
    notifiers.start()
    hook = JobWebhook(url=receiver.url("/job"), events=("completed",))
    job_id = await request_job(store, "usr_dave", hook)
    await store.append(new_event(JobAborted, job_id, actor="service:api"), expected=None)
    got = await receiver.wait_for(lambda rs: len(rs) >= 1)
    assert [r.type for r in got] == ["job.aborted"]
    data = got[0].json["data"]
    assert isinstance(data, dict) and data["id"] == job_id
    assert (data["status"], data["error_kind"]) == ("aborted", "deadline")
