"""Prometheus metrics of a running stack: every service as its own process with its own
metrics port, and a second API process. The counters and histograms move when jobs run,
builds end and webhooks are delivered; the consumers' backlog and the projection lag are
read from JetStream and Postgres; each API process answers with its own metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats
import pytest

from events import EventStore, new_id
from services.embedded.stack import SERVICES
from services.packages import zip_folder
from tests._events import job_requested
from tests._infra import free_port, needs_bubblewrap, wait_until
from tests.api._client import Client, new_user
from tests.api.conftest import Stack, running_stack, start_services, stop_services, wait_ready
from tests.metrics._scrape import Samples, scrape, total, value
from tests.notifier._receiver import Receiver

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
TOKEN = "scrape-" + "t" * 24


class Metered(msgspec.Struct):
    stack: Stack
    ports: dict[str, int]  # each service's metrics port
    second_api: str  # the second API process's address
    second_metrics_port: int

    def port_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/metrics"


@pytest.fixture(scope="module")
def metered(stack_env: dict[str, str]) -> Iterator[Metered]:
    needs_bubblewrap()
    env = {
        **stack_env,
        "CLINAI_RUNTIME": "process",
        "CLINAI_METRICS_TOKEN": TOKEN,
        "CLINAI_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "CLINAI_WEBHOOK_RETRY_BASE_S": "0.1",
        "CLINAI_WEBHOOK_RETRY_MAX_DELAY_S": "0.3",
        "CLINAI_WEBHOOK_DISABLE_AFTER_FAILURES": "2",
        "CLINAI_WEBHOOK_DISABLE_AFTER_S": "0",
    }
    ports = {name: free_port() for name in SERVICES}
    env_for = {name: {"CLINAI_METRICS_PORT": str(port)} for name, port in ports.items()}
    with running_stack(env, list(SERVICES), env_for=env_for) as stack:
        api_port, metrics_port = free_port(), free_port()
        second = {**env, "CLINAI_PORT": str(api_port), "CLINAI_METRICS_PORT": str(metrics_port)}
        procs = start_services(second, ["api"])
        try:
            wait_ready(f"http://127.0.0.1:{api_port}", procs)
            yield Metered(
                stack=stack,
                ports=ports,
                second_api=f"http://127.0.0.1:{api_port}",
                second_metrics_port=metrics_port,
            )
        finally:
            stop_services(procs)


async def _scrape_when_up(url: str) -> Samples:
    """A service's metrics, once its port listens (it opens it after connecting)."""
    got: list[Samples] = []

    async def answered() -> bool:
        try:
            got.append(await scrape(url))
        except OSError:
            return False
        return True

    await wait_until(answered, what=f"{url} to answer", timeout_s=30, every_s=0.1)
    return got[-1]


async def _version(client: Client, package: str) -> str:
    """A new version of tests/packages/`package`, built (a unique file: never reused)."""
    model = (await client.post("/v1/models", json={"name": f"m-{uuid.uuid4().hex[:8]}"})).body
    zipped = zip_folder(PACKAGES / package, extra={"build-id.txt": uuid.uuid4().hex})
    reply = await client.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", zipped)
    assert reply.status == 201, reply.body
    version_id = str(reply.body["id"])

    async def built() -> bool:
        status = (await client.get(f"/v1/versions/{version_id}")).body["status"]
        assert status != "failed"
        return status == "ready"

    await wait_until(built, what=f"{package} to be built", timeout_s=240, every_s=0.2)
    return version_id


async def _run(client: Client, version_id: str, **fields: str) -> dict:  # type: ignore[type-arg]
    created = await client.upload(
        "/v1/jobs", "input", "in.txt", b"hello", version=version_id, **fields
    )
    assert created.status == 202, created.body
    job = await client.get(
        f"/v1/jobs/{created.body['id']}",
        params={"wait": "60", "after_seq": str(created.body["seq"])},
    )
    assert job.body["status"] in ("succeeded", "failed"), job.body
    return job.body  # type: ignore[no-any-return]


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_move_when_jobs_run(metered: Metered, receiver: Receiver) -> None:
    stack = metered.stack
    alice = await new_user(stack.url, stack.admin_key, "alice")
    executor = await _scrape_when_up(metered.port_url("executor"))
    builder = await _scrape_when_up(metered.port_url("builder"))
    notifier = await _scrape_when_up(metered.port_url("notifier"))
    api = await scrape(f"{stack.url}/metrics", TOKEN)

    noop = await _version(alice, "noop")
    raises = await _version(alice, "raises")
    builder_after = await scrape(metered.port_url("builder"))
    assert _delta(builder_after, builder, "clinai_builds_total", outcome="built") == 2
    assert (
        _delta(builder_after, builder, "clinai_build_duration_seconds_count", outcome="built") == 2
    )

    jobs = [await _run(alice, noop) for _ in range(3)]
    jobs.append(await _run(alice, raises))
    jobs.append(await _run(alice, noop, webhook=receiver.url("/ok")))
    assert [j["status"] for j in jobs] == ["succeeded"] * 3 + ["failed", "succeeded"]

    after = await scrape(metered.port_url("executor"))
    ended = "clinai_jobs_ended_total"
    assert _delta(after, executor, ended, status="succeeded", kind="none") == 4
    assert _delta(after, executor, ended, status="failed", kind="model_error") == 1
    assert _delta(after, executor, "clinai_job_attempts_started_total") == 5
    assert _delta(after, executor, "clinai_job_queue_wait_seconds_count") == 5
    assert _delta(after, executor, "clinai_job_run_seconds_count", status="succeeded") == 4
    assert _delta(after, executor, "clinai_job_run_seconds_count", status="failed") == 1
    assert _delta(after, executor, "clinai_job_run_seconds_sum", status="succeeded") > 0
    # The workers stay warm after their jobs: one per version here, idle now.
    assert total(after, "clinai_warm_workers", version=noop) >= 1
    assert total(after, "clinai_warm_workers", version=raises) >= 1
    # The executor's consumer, read from JetStream: nothing waits now.
    assert value(after, "clinai_consumer_pending_messages", consumer="executor") == 0
    assert ("clinai_consumer_redelivered_messages", frozenset({("consumer", "executor")})) in after

    await receiver.wait_for(lambda rs: any(r.path == "/ok" for r in rs))

    async def delivered() -> bool:
        now = await scrape(metered.port_url("notifier"))
        return _delta(now, notifier, "clinai_webhook_deliveries_total", outcome="succeeded") == 1

    await wait_until(delivered, what="the delivery to be counted")
    now = await scrape(metered.port_url("notifier"))
    assert _delta(now, notifier, "clinai_webhook_delivery_seconds_count", outcome="succeeded") == 1

    # The API counts by route template, never by raw path: no job id in its metrics.
    api_after = await scrape(f"{stack.url}/metrics", TOKEN)
    posts = _delta(
        api_after, api, "clinai_http_requests_total", method="POST", route="/v1/jobs", status="202"
    )
    assert posts == 5
    gets = ("GET", "/v1/jobs/{job_id}", "200")
    assert (
        _delta(
            api_after,
            api,
            "clinai_http_requests_total",
            **dict(zip(("method", "route", "status"), gets, strict=True)),
        )
        >= 5
    )
    assert not any(job["id"] in str(labels) for job in jobs for _, labels in api_after)


async def test_projection_lag_is_read_from_the_stream_and_postgres(metered: Metered) -> None:
    url = metered.port_url("projector")
    await _scrape_when_up(url)

    async def caught_up() -> bool:
        now = await scrape(url)
        last = value(now, "clinai_stream_last_sequence")
        return last > 0 and value(now, "clinai_projection_checkpoint") == last

    await wait_until(caught_up, what="the read models to catch up")
    now = await scrape(url)
    assert value(now, "clinai_projection_lag_events") == 0
    assert value(now, "clinai_metrics_probe_failures_total", probe="projection") == 0


async def test_each_api_process_answers_with_its_own_metrics(metered: Metered) -> None:
    stack = metered.stack
    first, second = Client(stack.url, stack.admin_key), Client(metered.second_api, stack.admin_key)
    me = {"method": "GET", "route": "/v1/me", "status": "200"}
    before = [
        await scrape(f"{stack.url}/metrics", TOKEN),
        await scrape(f"{metered.second_api}/metrics", TOKEN),
    ]
    for _ in range(3):
        assert (await first.get("/v1/me")).status == 200
    for _ in range(2):
        assert (await second.get("/v1/me")).status == 200
    after = [
        await scrape(f"{stack.url}/metrics", TOKEN),
        await scrape(f"{metered.second_api}/metrics", TOKEN),
    ]
    assert _delta(after[0], before[0], "clinai_http_requests_total", **me) == 3
    assert _delta(after[1], before[1], "clinai_http_requests_total", **me) == 2
    # The metrics port needs no key (a private interface); the API's port does.
    port = await scrape(f"http://127.0.0.1:{metered.second_metrics_port}/metrics")
    assert ("clinai_http_requests_total", frozenset(me.items())) in port
    assert (await Client(stack.url, None).get("/metrics")).status == 401
    assert (await Client(stack.url, "not-the-token").get("/metrics")).status == 401
    alice = await new_user(stack.url, stack.admin_key, "alice")
    refused = await alice.get("/metrics")
    assert refused.status == 403 and "CLINAI_METRICS_TOKEN" in refused.body["detail"]
    assert (await first.get("/metrics")).status == 200  # an admin key reads them too
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    await first.get(f"/no/such/{uuid.uuid4().hex}")
    assert (
        value(
            await scrape(f"{stack.url}/metrics", TOKEN), "clinai_http_requests_total", **unmatched
        )
        >= 1
    )


async def test_disabled_webhook_endpoints_are_counted(metered: Metered, receiver: Receiver) -> None:
    stack = metered.stack
    url = metered.port_url("notifier")
    before = await _scrape_when_up(url)
    bob = await new_user(stack.url, stack.admin_key, "bob")
    receiver.status["/down"] = 502
    created = await bob.post(
        "/v1/webhooks", json={"url": receiver.url("/down"), "events": ["job.created"]}
    )
    assert created.status == 201, created.body
    bob_id = str((await bob.get("/v1/me")).body["user_id"])
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        job = job_requested(new_id("job"), bob_id, actor=bob_id, webhook=None)
        await bob.get("/v1/webhooks", params={"after_seq": str(created.body["seq"])})
        await store.append(job, expected=0)
    finally:
        await nc.drain()

    async def disabled() -> bool:
        now = await scrape(url)
        return value(now, "clinai_webhook_endpoints_disabled") >= 1 and (
            _delta(now, before, "clinai_webhook_endpoint_disables_total") == 1
        )

    await wait_until(disabled, what="the endpoint to be disabled and counted", timeout_s=30)
    now = await scrape(url)
    assert _delta(now, before, "clinai_webhook_deliveries_total", outcome="retrying") >= 1
    assert value(now, "clinai_consumer_pending_messages", consumer="notifier") >= 0
