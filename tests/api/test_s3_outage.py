"""The s3 blob store going away under a running stack: `/readyz` names it, a command
that needs it answers 503 with Retry-After, and a job whose outputs could not be stored
is retried once the store is back and ends once, nothing lost.

S3 (moto's server) sits behind a gate, a proxy the test closes (the store refuses
connections, as a stopped server does) and opens again: moto keeps its objects in
memory, so stopping the server itself would lose them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import nats
import pytest

from events import EventStore, JobCanceled, JobFailed, JobSucceeded
from services.packages import zip_folder
from tests._infra import needs_bubblewrap, wait_until
from tests._s3 import Gate, create_bucket, s3_env
from tests.api._client import Client, new_user
from tests.api.conftest import Stack, running_stack

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


class GatedStack(msgspec.Struct):
    stack: Stack
    gate: Gate


@pytest.fixture(scope="module")
def gated(stack_env: dict[str, str], s3_endpoint: str) -> Iterator[GatedStack]:
    needs_bubblewrap()
    gate = Gate(s3_endpoint)
    gate.open()
    env = {
        **stack_env,
        **s3_env(gate.url, asyncio.run(create_bucket(s3_endpoint))),
        "CLINAI_JOB_MAX_ATTEMPTS": "5",
    }
    try:
        with running_stack(env, ["projector", "api", "builder", "executor"]) as stack:
            yield GatedStack(stack=stack, gate=gate)
    finally:
        gate.stop()


@pytest.fixture
def gate(gated: GatedStack) -> Iterator[Gate]:
    """The gate, open again after the test whatever happened."""
    yield gated.gate
    gated.gate.open()


async def ready_version(client: Client, package: str) -> str:
    model = (await client.post("/v1/models", json={"name": package})).body
    reply = await client.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(PACKAGES / package)
    )
    assert reply.status == 201, reply.body

    async def ready() -> bool:
        status = (await client.get(f"/v1/versions/{reply.body['id']}")).body["status"]
        assert status != "failed"
        return bool(status == "ready")

    await wait_until(ready, what="the version to be built", timeout_s=240)
    return str(reply.body["id"])


async def test_readyz_names_the_store_and_commands_answer_503(
    gated: GatedStack, gate: Gate
) -> None:
    alice = await new_user(gated.stack.url, gated.stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": "m"})).body
    package = zip_folder(PACKAGES / "noop")
    gate.close()
    anonymous = Client(gated.stack.url, None)
    ready = await anonymous.get("/readyz")
    assert ready.status == 503 and ready.headers["retry-after"]
    assert "the blob store (S3 bucket" in ready.body["detail"], ready.body
    refused = await alice.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", package)
    assert refused.status == 503, refused.body
    assert refused.headers["retry-after"] and "the blob store" in refused.body["detail"]
    gate.open()
    await wait_until(
        lambda: _status(anonymous, "/readyz", 200), what="ready again with the store back"
    )
    accepted = await alice.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", package)
    assert accepted.status == 201, accepted.body


async def test_a_job_whose_outputs_cannot_be_stored_is_retried_and_ends_once(
    gated: GatedStack, gate: Gate
) -> None:
    alice = await new_user(gated.stack.url, gated.stack.admin_key, "alice")
    version_id = await ready_version(alice, "nap")
    data = b"input bytes " * 1000
    form = aiohttp.FormData()
    form.add_field("version", version_id)
    form.add_field("params", '{"sleep_s": 1.5}')
    form.add_field("input", io.BytesIO(data), filename="in.bin")
    created = await alice.request("POST", "/v1/jobs", data=form)
    assert created.status == 202, created.body
    job_url = f"/v1/jobs/{created.body['id']}"

    async def running() -> bool:
        return bool((await alice.get(job_url)).body["status"] == "running")

    async def retried() -> bool:
        return int((await alice.get(job_url)).body["attempt"]) >= 2

    await wait_until(running, what="the job to run", timeout_s=30)
    gate.close()  # while it runs: its outputs cannot be stored
    await wait_until(retried, what="a second attempt", timeout_s=60)
    gate.open()
    ended = (await alice.get(job_url, params={"wait": "60"})).body
    assert ended["status"] == "succeeded", ended
    assert ended["attempt"] >= 2
    [output] = ended["outputs"]
    async with aiohttp.ClientSession() as http, http.get(output["url"]) as resp:
        assert resp.status == 200 and await resp.read() == data
    # Ended once: one terminal event in the job's history.
    nc = await nats.connect(gated.stack.env["CLINAI_NATS_URL"])
    try:
        store = await EventStore.open(nc, stream=gated.stack.settings.stream_name)
        history = await store.read_aggregate("job", created.body["id"])
    finally:
        await nc.drain()
    ends = (JobSucceeded, JobFailed, JobCanceled)
    terminal = [stored for stored in history.events if isinstance(stored.event, ends)]
    assert len(terminal) == 1, terminal


async def _status(client: Client, path: str, expected: int) -> bool:
    return (await client.get(path)).status == expected
