"""Jobs under a reused Idempotency-Key, run by every service on both blob backends: a
different request is refused (422), the first job's stored input stays its own and the
job runs on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from services.domain.context import CommandContext
from tests._infra import http_files
from tests.api._client import Client, new_user, only_output, ready_version
from tests.api._idempotency import new_key, refused, stack_blobs, stored_bytes
from tests.api.conftest import Stack

# --- jobs that run, on both blob backends (every service) -----------------------------


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


async def _ended(client: Client, job_id: str, seq: int) -> dict[str, Any]:
    params = {"wait": "60", "after_seq": str(seq)}  # the read models hold the job
    job = (await client.get(f"/v1/jobs/{job_id}", params=params)).body
    assert job["status"] == "succeeded", job
    return job  # type: ignore[no-any-return]


async def test_a_reused_key_with_another_file_runs_the_first_input(
    full_stack: Stack, echoing: tuple[Client, str]
) -> None:
    alice, echo_version = echoing
    key = new_key()
    photo, other = b"the first photo\n" * 500, b"another photo\n" * 700
    first = await alice.upload("/v1/jobs", "input", "photo.png", photo, key, version=echo_version)
    assert first.status == 202, first.body
    job_id = first.body["id"]
    other_reply = await alice.upload(
        "/v1/jobs", "input", "other.png", other, key, version=echo_version
    )
    refused(other_reply, job_id)
    again = await alice.upload("/v1/jobs", "input", "photo.png", photo, key, version=echo_version)
    assert again.status in (200, 202) and again.body["id"] == job_id
    assert await stored_bytes(full_stack, f"inputs/{job_id}") == photo
    job = await _ended(alice, job_id, first.body["seq"])
    assert job["input_filename"] == "photo.png" and job["result"]["bytes"] == len(photo)
    assert await only_output(job) == photo


async def test_a_retry_after_an_attempt_that_died_before_its_append_runs_the_job(
    full_stack: Stack, echoing: tuple[Client, str]
) -> None:
    """What an API process killed between committing a job's input and appending the
    job leaves: the input stored under the job's id, no job. A retry of the same request
    runs the job on it; another file under that key gets 409 and changes nothing."""
    alice, echo_version = echoing
    me = (await alice.get("/v1/me")).body
    photo, other = b"the photo sent twice\n" * 400, b"a different photo\n" * 300
    keys = [new_key(), new_key()]
    job_ids = [
        CommandContext(
            actor=me["user_id"], correlation_id="-", idempotency_key=key["Idempotency-Key"]
        ).resource_id("job")
        for key in keys
    ]
    async with stack_blobs(full_stack) as blobs:
        for job_id in job_ids:
            await blobs.put_bytes(f"inputs/{job_id}", photo, "image/png")

    retry = await alice.upload("/v1/jobs", "input", "p.png", photo, keys[0], version=echo_version)
    assert retry.status == 202 and retry.body["id"] == job_ids[0], retry.body
    job = await _ended(alice, job_ids[0], retry.body["seq"])
    assert job["result"]["bytes"] == len(photo) and await only_output(job) == photo

    busy = await alice.upload("/v1/jobs", "input", "p.png", other, keys[1], version=echo_version)
    assert busy.status == 409 and "Idempotency-Key" in busy.body["detail"], busy.body
    assert await stored_bytes(full_stack, f"inputs/{job_ids[1]}") == photo
    assert (await alice.get(f"/v1/jobs/{job_ids[1]}")).status == 404


async def test_a_reused_key_with_another_url_or_params_keeps_the_first(
    full_stack: Stack, echoing: tuple[Client, str], files: tuple[str, dict[str, bytes]]
) -> None:
    base, served = files
    served["/a.bin"], served["/b.bin"] = b"served as a\n" * 50, b"served as b\n" * 60
    alice, echo_version = echoing
    key, body = new_key(), {"version": echo_version, "input_url": f"{base}/a.bin"}
    first = await alice.post("/v1/jobs", json=body, headers=key)
    assert first.status == 202, first.body
    job_id = first.body["id"]
    for changed in [{**body, "input_url": f"{base}/b.bin"}, {**body, "params": {"n": 2}}]:
        refused(await alice.post("/v1/jobs", json=changed, headers=key), job_id)
    again = await alice.post("/v1/jobs", json=body, headers=key)
    assert again.status in (200, 202) and again.body["id"] == job_id
    assert await stored_bytes(full_stack, f"inputs/{job_id}") == f"{base}/a.bin".encode()
    job = await _ended(alice, job_id, first.body["seq"])
    assert job["params"] == {} and await only_output(job) == served["/a.bin"]


async def test_two_urls_under_one_key_at_once_make_one_job_on_its_own_url(
    full_stack: Stack, echoing: tuple[Client, str], files: tuple[str, dict[str, bytes]]
) -> None:
    """Sent at the same moment: one is made, the other refused (422) or told the first is
    in progress (409), and the stored URL is the one of the request made."""
    base, served = files
    alice, echo_version = echoing
    for round_no in range(5):
        urls = [f"{base}/r{round_no}-{side}.bin" for side in "ab"]
        for side, url in zip("ab", urls, strict=True):
            served[url.removeprefix(base)] = f"served as {side}\n".encode() * 40
        key = new_key()
        replies = await asyncio.gather(
            *(
                alice.post("/v1/jobs", json={"version": echo_version, "input_url": u}, headers=key)
                for u in urls
            )
        )
        made = [(url, r) for url, r in zip(urls, replies, strict=True) if r.status == 202]
        assert len(made) == 1, [(r.status, r.body) for r in replies]
        assert all(r.status in (202, 409, 422) for r in replies), [r.body for r in replies]
        url, reply = made[0]
        job_id = reply.body["id"]
        assert await stored_bytes(full_stack, f"inputs/{job_id}") == url.encode()
        job = await _ended(alice, job_id, reply.body["seq"])
        assert await only_output(job) == served[url.removeprefix(base)]
