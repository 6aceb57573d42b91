"""Webhooks over HTTP with the notifier running as its own process, delivering to a
loopback receiver (allowlisted here with CLINAI_WEBHOOK_ALLOW_NETWORKS)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest

from events import EventStore, JobStarted, JobWebhook, new_id
from tests._events import job_requested, new_event
from tests.api._client import Client, new_user
from tests.api.conftest import Stack, running_stack
from tests.notifier._receiver import Receiver, standard_verify


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    env = {
        **stack_env,
        "CLINAI_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "CLINAI_WEBHOOK_RETRY_BASE_S": "0.1",
        "CLINAI_WEBHOOK_RETRY_MAX_DELAY_S": "0.3",
        "CLINAI_WEBHOOK_DISABLE_AFTER_FAILURES": "4",
        "CLINAI_WEBHOOK_DISABLE_AFTER_S": "0",
    }
    with running_stack(env, ["projector", "api", "notifier"]) as running:
        yield running


async def _job(stack: Stack, owner: str, webhook: JobWebhook | None = None) -> str:
    """A job requested straight in the log (no model needed for webhooks)."""
    job_id = new_id("job")
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        await store.append(
            job_requested(job_id, owner, actor=owner, webhook=webhook),
            expected=0,
        )
    finally:
        await nc.drain()
    return job_id


async def _user_id(client: Client) -> str:
    return str((await client.get("/v1/me")).body["user_id"])


async def _eventually(client: Client, path: str, check: object, timeout: float = 15) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await client.get(path)
        if reply.status == 200 and check(reply.body):  # type: ignore[operator]
            return reply.body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} never satisfied the check: {reply.body}")
        await asyncio.sleep(0.05)  # polling interval with a deadline


async def test_subscription_lifecycle_and_secret_shown_once(
    stack: Stack, receiver: Receiver
) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    created = await alice.post(
        "/v1/webhooks", json={"url": receiver.url("/a"), "events": ["job.*"], "description": "ci"}
    )
    assert created.status == 201, created.body
    hook_id, secret = created.body["id"], created.body["secret"]
    assert secret.startswith("whsec_")
    seq = str(created.body["seq"])
    got = await alice.get(f"/v1/webhooks/{hook_id}", params={"after_seq": seq})
    assert got.status == 200 and got.body["events"] == ["job.*"] and got.body["enabled"]
    assert secret not in str(got.body) and "secret" not in got.body
    listed = await alice.get("/v1/webhooks")
    assert [h["id"] for h in listed.body["items"]] == [hook_id]
    assert secret not in str(listed.body)
    assert (await bob.get(f"/v1/webhooks/{hook_id}")).status == 404
    assert (await bob.request("DELETE", f"/v1/webhooks/{hook_id}")).status == 404
    patched = await alice.request(
        "PATCH", f"/v1/webhooks/{hook_id}", json={"events": ["version.built"]}
    )
    assert patched.status == 202
    got = await alice.get(f"/v1/webhooks/{hook_id}", params={"after_seq": str(patched.body["seq"])})
    assert got.body["events"] == ["version.built"]
    rotated = await alice.post(f"/v1/webhooks/{hook_id}/rotate-secret")
    assert rotated.status == 200 and rotated.body["secret"] != secret
    assert rotated.body["generation"] == 2 and rotated.body["previous_valid_until"]
    deleted = await alice.request("DELETE", f"/v1/webhooks/{hook_id}")
    assert deleted.status == 202
    gone = await alice.get(
        f"/v1/webhooks/{hook_id}", params={"after_seq": str(deleted.body["seq"])}
    )
    assert gone.status == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "http://10.0.0.8/hook", "events": ["job.*"]}, "private"),
        ({"url": "http://169.254.169.254/latest", "events": ["job.*"]}, "metadata"),
        ({"url": "gopher://example.com/", "events": ["job.*"]}, "http"),
        ({"url": "https://example.com/", "events": ["jobs.*"]}, "matches no event type"),
        ({"url": "https://example.com/", "events": []}, "$.events"),
    ],
)
async def test_bad_subscriptions_are_422(
    stack: Stack, body: dict[str, object], needle: str
) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.post("/v1/webhooks", json=body)
    assert reply.status == 422, reply.body
    assert needle in reply.body["detail"]


async def _failing_delivery(
    stack: Stack, receiver: Receiver, path: str, status: int
) -> tuple[Client, str, str]:
    """A new user's subscription to job.created at `path` of the receiver, which answers
    `status` there until told otherwise, and a job of that user's: (the user, the
    subscription's id, its secret)."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    receiver.status[path] = status
    created = await alice.post(
        "/v1/webhooks", json={"url": receiver.url(path), "events": ["job.created"]}
    )
    assert created.status == 201, created.body
    await _job(stack, await _user_id(alice))
    return alice, created.body["id"], created.body["secret"]


async def test_deliveries_are_listed_with_attempts_and_can_be_resent(
    stack: Stack, receiver: Receiver
) -> None:
    alice, hook_id, secret = await _failing_delivery(stack, receiver, "/d", 500)
    await receiver.wait_for(lambda rs: len(rs) >= 2)
    receiver.status["/d"] = 200
    got = await receiver.wait_for(lambda rs: rs[-1].path == "/d" and len(rs) >= 3)
    assert all(standard_verify(secret, r) for r in got)
    assert len({r.msg_id for r in got}) == 1
    path = f"/v1/webhooks/{hook_id}/deliveries"
    body = await _eventually(
        alice, path, lambda b: b["items"] and b["items"][0]["status"] == "succeeded"
    )
    [delivery] = body["items"]  # type: ignore[index]
    assert delivery["event_type"] == "job.created" and delivery["message_id"] == got[0].msg_id
    attempts = delivery["attempts"]
    assert [a["status_code"] for a in attempts][-1] == 200
    assert all(a["status_code"] == 500 and a["outcome"] == "retrying" for a in attempts[:-1])
    assert all(a["latency_ms"] >= 0 for a in attempts)
    resent = await alice.post(f"{path}/{delivery['id']}/redeliver")
    assert resent.status == 202
    again = await receiver.wait_for(lambda rs: len(rs) >= len(got) + 1)
    assert again[-1].msg_id == delivery["message_id"]


async def test_failing_endpoint_is_disabled_and_can_be_reenabled(
    stack: Stack, receiver: Receiver
) -> None:
    alice, hook_id, _ = await _failing_delivery(stack, receiver, "/down", 502)
    body = await _eventually(alice, f"/v1/webhooks/{hook_id}", lambda b: not b["enabled"])
    assert "consecutive failed" in body["disabled_reason"]  # type: ignore[index]
    receiver.status["/down"] = 200
    enabled = await alice.post(f"/v1/webhooks/{hook_id}/enable")
    assert enabled.status == 202
    await _eventually(alice, f"/v1/webhooks/{hook_id}", lambda b: b["enabled"])
    before = len(receiver.received)
    await _job(stack, await _user_id(alice))
    got = await receiver.wait_for(lambda rs: len(rs) > before)
    assert got[-1].type == "job.created"


async def test_a_jobs_own_webhook_uses_the_default_secret(stack: Stack, receiver: Receiver) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    secret = (await alice.get("/v1/webhooks/default/secret")).body["secret"]
    hook = JobWebhook(url=receiver.url("/mine"), events=("start", "completed"))
    job_id = await _job(stack, await _user_id(alice), webhook=hook)
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        await store.append(
            new_event(JobStarted, job_id, actor="test"),
            expected=None,
        )
    finally:
        await nc.drain()
    [got] = await receiver.wait_for(lambda rs: len(rs) >= 1)
    assert got.type == "job.started"  # job.created is not among start/output/completed
    assert standard_verify(secret, got)
