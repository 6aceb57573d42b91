"""An Idempotency-Key reused: the same request replays the first answer; a different
request is refused (422) and changes nothing the first one stored (its input, package or
record), on both blob backends, with the job still running on its own input."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp import web

from events import EventStore, VersionBuilt
from services.blobstore import BlobStore, S3BlobStore
from services.infra.connections import open_blob_store
from services.packages import zip_folder
from tests._events import new_event
from tests._infra import http_files, needs_bubblewrap
from tests._s3 import create_bucket, s3_env, s3_session
from tests.api._client import Client, Reply, new_user, ready_version
from tests.api.conftest import Stack, running_stack

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}


def _refused(reply: Reply, created: str) -> None:
    """A 422 problem that says the key was used for another request, naming what it made."""
    assert reply.status == 422, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    detail = reply.body["detail"]
    assert "already used for a different request" in detail, detail
    assert created in detail and "new Idempotency-Key" in detail, detail


async def _stored(stack: Stack, key: str) -> bytes:
    """The stored bytes of `key`, read from the stack's blob store itself."""
    settings = stack.settings
    if settings.blob_backend == "s3":
        blobs: BlobStore = S3BlobStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            spool=settings.data_dir / "spool",
            session=s3_session(),
        )
    else:
        blobs = open_blob_store(settings)
    try:
        return await blobs.get_bytes(key)
    finally:
        await blobs.close()


# --- models, versions, webhooks (API and projector only, file backend) --------------


async def test_a_model_key_reused_with_another_name_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    key, name = _key(), f"idem-{uuid.uuid4().hex[:8]}"
    first = await alice.post("/v1/models", json={"name": name}, headers=key)
    assert first.status == 201, first.body
    again = await alice.post("/v1/models", json={"name": name}, headers=key)
    assert again.status == 201 and again.body == first.body
    other = await alice.post("/v1/models", json={"name": name + "-2"}, headers=key)
    _refused(other, first.body["id"])
    private = await alice.post(
        "/v1/models", json={"name": name, "visibility": "public"}, headers=key
    )
    _refused(private, first.body["id"])
    got = await alice.get(f"/v1/models/{first.body['id']}")
    assert got.body["name"] == name and got.body["visibility"] == "private"
    listed = await alice.get("/v1/models")
    assert [m["id"] for m in listed.body["items"]] == [first.body["id"]]


async def test_a_version_key_reused_with_another_package_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": f"v-{uuid.uuid4().hex[:8]}"})).body
    path, key = f"/v1/models/{model['id']}/versions", _key()
    package = zip_folder(PACKAGES / "noop")
    first = await alice.upload(path, "package", "p.zip", package, headers=key)
    assert first.status == 201, first.body
    again = await alice.upload(path, "package", "p.zip", package, headers=key)
    assert again.status == 201 and again.body["id"] == first.body["id"]
    other_package = zip_folder(PACKAGES / "write_outputs")
    other = await alice.upload(path, "package", "p.zip", other_package, headers=key)
    _refused(other, first.body["id"])
    stored = await _stored(stack, f"packages/{first.body['id']}/package.zip")
    assert stored == package
    listed = await alice.get(path, params={"after_seq": str(first.body["seq"])})
    assert [v["number"] for v in listed.body["items"]] == [1]


async def test_a_webhook_key_reused_with_another_url_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    key = _key()
    body = {"url": "https://example.com/a", "events": ["job.*"]}
    first = await alice.post("/v1/webhooks", json=body, headers=key)
    assert first.status == 201, first.body
    again = await alice.post("/v1/webhooks", json=body, headers=key)
    assert again.status == 201 and again.body["id"] == first.body["id"]
    other = await alice.post(
        "/v1/webhooks", json={**body, "url": "https://example.com/b"}, headers=key
    )
    _refused(other, first.body["id"])
    got = await alice.get(f"/v1/webhooks/{first.body['id']}")
    assert got.body["url"] == "https://example.com/a"


async def _legacy_version(stack: Stack, alice: Client) -> str:
    """A version of the echo model (run(input_path, output_dir)), marked built straight
    in the log (no builder runs in `stack`)."""
    model = (await alice.post("/v1/models", json={"name": f"e-{uuid.uuid4().hex[:8]}"})).body
    version = (
        await alice.upload(
            f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(PACKAGES / "noop")
        )
    ).body
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        history = await store.read_aggregate("version", version["id"])
        built = new_event(
            VersionBuilt, version["id"], actor="test", runtime="process", artifact="a", duration_s=0
        )
        seq = await store.append(built, expected=history.last_seq)
    finally:
        await nc.drain()
    await alice.get(f"/v1/versions/{version['id']}", params={"after_seq": str(seq)})
    return str(version["id"])


async def test_a_job_key_reused_with_another_file_keeps_the_first_input(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    version, key = await _legacy_version(stack, alice), _key()
    photo, other = b"photo bytes " * 100, b"other bytes " * 100
    first = await alice.upload("/v1/jobs", "input", "photo.png", photo, key, version=version)
    assert first.status == 202, first.body
    job_id = first.body["id"]
    again = await alice.upload("/v1/jobs", "input", "photo.png", photo, key, version=version)
    assert again.status == 202 and (again.body["id"], again.body["seq"]) == (
        job_id,
        first.body["seq"],
    )
    # Same name and size, other bytes; then another name; then other params.
    same_size = b"x" * len(photo)
    for name, data, fields in [
        ("photo.png", same_size, {}),
        ("other.png", other, {}),
        ("photo.png", photo, {"params": '{"a": 1}'}),
    ]:
        reply = await alice.upload("/v1/jobs", "input", name, data, key, version=version, **fields)
        _refused(reply, job_id)
    assert await _stored(stack, f"inputs/{job_id}") == photo
    got = await alice.get(f"/v1/jobs/{job_id}")
    assert got.body["input_filename"] == "photo.png" and got.body["params"] == {}
    assert got.body["input_size_bytes"] == len(photo)


# --- jobs that run, on both blob backends (every service) -----------------------------


@pytest.fixture(scope="module", params=["file", "s3"])
def full_stack(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> Iterator[Stack]:
    needs_bubblewrap()
    env = {**stack_env, "CLINAI_INPUT_URL_ALLOW_NETWORKS": "127.0.0.0/8"}
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        env.update(s3_env(endpoint, asyncio.run(create_bucket(endpoint))))
    with running_stack(env, ["projector", "api", "builder", "executor"]) as running:
        yield running


@pytest.fixture(scope="module")
def echoing(full_stack: Stack) -> tuple[Client, str]:
    """A user and their version of the echo model (echo.txt = the input), built by the
    builder."""

    async def build() -> tuple[Client, str]:
        owner = await new_user(full_stack.url, full_stack.admin_key, "alice")
        return owner, await ready_version(owner, "noop")

    return asyncio.run(build())


@pytest.fixture
async def files() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server on loopback serving `files[path]`."""
    served: dict[str, bytes] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path not in served:
            raise web.HTTPNotFound()
        return web.Response(body=served[request.path])

    async with http_files(handle) as base:
        yield base, served


async def _ended(client: Client, job_id: str) -> dict[str, Any]:
    job = (await client.get(f"/v1/jobs/{job_id}", params={"wait": "60"})).body
    assert job["status"] == "succeeded", job
    return job  # type: ignore[no-any-return]


async def _echoed(job: dict[str, Any]) -> bytes:
    import aiohttp

    [output] = job["outputs"]
    async with aiohttp.ClientSession() as http, http.get(output["url"]) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_a_reused_key_with_another_file_runs_the_first_input(
    full_stack: Stack, echoing: tuple[Client, str]
) -> None:
    alice, echo_version = echoing
    key = _key()
    photo, other = b"the first photo\n" * 500, b"another photo\n" * 700
    first = await alice.upload("/v1/jobs", "input", "photo.png", photo, key, version=echo_version)
    assert first.status == 202, first.body
    job_id = first.body["id"]
    refused = await alice.upload("/v1/jobs", "input", "other.png", other, key, version=echo_version)
    _refused(refused, job_id)
    again = await alice.upload("/v1/jobs", "input", "photo.png", photo, key, version=echo_version)
    assert again.status in (200, 202) and again.body["id"] == job_id
    assert await _stored(full_stack, f"inputs/{job_id}") == photo
    job = await _ended(alice, job_id)
    assert job["input_filename"] == "photo.png" and job["result"]["bytes"] == len(photo)
    assert await _echoed(job) == photo


async def test_a_reused_key_with_another_url_or_params_keeps_the_first(
    full_stack: Stack, echoing: tuple[Client, str], files: tuple[str, dict[str, bytes]]
) -> None:
    base, served = files
    served["/a.bin"], served["/b.bin"] = b"served as a\n" * 50, b"served as b\n" * 60
    alice, echo_version = echoing
    key, body = _key(), {"version": echo_version, "input_url": f"{base}/a.bin"}
    first = await alice.post("/v1/jobs", json=body, headers=key)
    assert first.status == 202, first.body
    job_id = first.body["id"]
    for changed in [{**body, "input_url": f"{base}/b.bin"}, {**body, "params": {"n": 2}}]:
        _refused(await alice.post("/v1/jobs", json=changed, headers=key), job_id)
    again = await alice.post("/v1/jobs", json=body, headers=key)
    assert again.status in (200, 202) and again.body["id"] == job_id
    assert await _stored(full_stack, f"inputs/{job_id}") == f"{base}/a.bin".encode()
    job = await _ended(alice, job_id)
    assert job["params"] == {} and await _echoed(job) == served["/a.bin"]
