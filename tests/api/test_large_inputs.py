"""Direct uploads (`POST /v1/uploads`, the bytes sent to the upload URL, then a JSON job
naming the upload) and inputs by URL (fetched by the executor from a real local HTTP
server), with every service running as `clinai up` runs them (file backend, process
runtime)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from events import new_id
from services.packages import zip_folder
from tests._events import logged_job_request
from tests._infra import http_files
from tests.api._client import Client, new_user, only_output
from tests.api.conftest import Stack

SIGNATURE = "s3cr3t"  # of the presigned links the file server checks

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
MAX_INPUT = 1024 * 1024  # CLINAI_MAX_INPUT_BYTES in the stack (tests/api/conftest.py)


@pytest.fixture(scope="module")
def version_id(full_stack: Stack) -> str:
    """A ready version of the echo model (tests/packages/noop: echo.txt = the input)."""

    async def build() -> str:
        owner = await new_user(full_stack.url, full_stack.admin_key, "modeller")
        name = f"echo-{uuid.uuid4().hex[:8]}"
        model = (await owner.post("/v1/models", json={"name": name, "visibility": "public"})).body
        package = zip_folder(PACKAGES / "noop")
        reply = await owner.upload(
            f"/v1/models/{model['id']}/versions", "package", "p.zip", package
        )
        assert reply.status == 201, reply.body
        deadline = time.monotonic() + 240
        while (version := (await owner.get(f"/v1/versions/{reply.body['id']}")).body)[
            "status"
        ] not in ("ready", "failed"):
            assert time.monotonic() < deadline, version
            await asyncio.sleep(0.2)  # polling interval for a build that takes seconds
        assert version["status"] == "ready", version
        return str(version["id"])

    return asyncio.run(build())


@pytest.fixture
async def files() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server on loopback serving `files[path]`; '/hop' redirects to
    '/in.bin'. A link signed with `X-Amz-Signature` must carry the right one."""
    served: dict[str, bytes] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/hop":
            raise web.HTTPFound("/in.bin")
        if request.query.get("X-Amz-Signature", SIGNATURE) != SIGNATURE:
            raise web.HTTPForbidden()
        if request.path not in served:
            raise web.HTTPNotFound()
        return web.Response(body=served[request.path])

    async with http_files(handle) as base:
        yield base, served


async def _new_upload(client: Client, filename: str = "in.txt") -> dict[str, Any]:
    reply = await client.post(
        "/v1/uploads", json={"filename": filename, "content_type": "text/plain"}
    )
    assert reply.status == 201, reply.body
    return reply.body  # type: ignore[no-any-return]


async def _send(upload: dict[str, Any], data: bytes) -> tuple[int, Any]:
    """The bytes to the upload URL, as any HTTP client would send them (no API key)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            upload["method"], upload["url"], data=io.BytesIO(data), headers=upload["headers"]
        ) as resp,
    ):
        body = await resp.read()
        if resp.content_type != "application/problem+json" and not body.startswith(b"{"):
            return resp.status, body  # S3's own answer (XML)
        return resp.status, msgspec.json.decode(body) if body else None


async def _job(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/v1/jobs", json=body, params={"wait": "60"})
    assert created.status in (200, 202), created.body
    job = created.body
    if job["status"] not in ("succeeded", "failed", "canceled"):
        job = (await client.get(f"/v1/jobs/{job['id']}", params={"wait": "60"})).body
    return job  # type: ignore[no-any-return]


async def test_a_direct_upload_feeds_one_job(full_stack: Stack, version_id: str) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    upload = await _new_upload(alice, "scan.txt")
    assert upload["id"].startswith("upload_") and upload["method"] == "PUT"
    assert upload["max_bytes"] == MAX_INPUT
    data = b"bytes sent straight to storage\n" * 1000
    status, _ = await _send(upload, data)
    assert status == 200

    job = await _job(alice, {"version": version_id, "input": upload["id"]})
    assert job["status"] == "succeeded", job
    assert job["input_filename"] == "scan.txt"
    assert job["result"]["bytes"] == len(data)
    assert await only_output(job) == data

    # One upload, one job: a second use is refused, saying what to do.
    again = await alice.post("/v1/jobs", json={"version": version_id, "input": upload["id"]})
    assert again.status == 409, again.body
    assert "POST /v1/uploads" in again.body["detail"]
    # And its bytes cannot be replaced under the job: the API refuses, or S3 itself
    # (a precondition on the presigned PUT).
    status, problem = await _send(upload, b"other bytes")
    if full_stack.env.get("CLINAI_BLOB_BACKEND") == "s3":
        assert status == 412 and b"PreconditionFailed" in problem, problem
    else:
        assert status == 409 and "POST /v1/uploads" in problem["detail"]
    assert await only_output(job) == data


async def test_an_oversized_upload_to_s3_is_refused_when_a_job_uses_it(
    full_stack: Stack, version_id: str
) -> None:
    """A presigned PUT cannot cap its size: the API checks the stored size."""
    if full_stack.env.get("CLINAI_BLOB_BACKEND") != "s3":
        pytest.skip("the file backend refuses the PUT itself (test_uploads_are_refused_clearly)")
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    upload = await _new_upload(alice)
    status, _ = await _send(upload, b"x" * (MAX_INPUT + 1))
    assert status == 200
    refused = await alice.post("/v1/jobs", json={"version": version_id, "input": upload["id"]})
    assert refused.status == 413 and str(MAX_INPUT) in refused.body["detail"], refused.body


async def test_uploads_are_refused_clearly(full_stack: Stack, version_id: str) -> None:
    if full_stack.env.get("CLINAI_BLOB_BACKEND") == "s3":
        pytest.skip("the upload URL and the records on disk are the file backend's")
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    mallory = await new_user(full_stack.url, full_stack.admin_key, "mallory")
    upload = await _new_upload(alice)

    # Not sent yet: 409, naming where to send the bytes.
    early = await alice.post("/v1/jobs", json={"version": version_id, "input": upload["id"]})
    assert early.status == 409, early.body
    assert "upload's URL" in early.body["detail"]

    status, problem = await _send(upload, b"x" * (MAX_INPUT + 1))
    assert status == 413 and str(MAX_INPUT) in problem["detail"]
    status, _ = await _send(upload, b"alice's bytes")
    assert status == 200

    # Someone else's upload does not exist for them.
    stolen = await mallory.post("/v1/jobs", json={"version": version_id, "input": upload["id"]})
    assert stolen.status == 404, stolen.body
    missing = await alice.post("/v1/jobs", json={"version": version_id, "input": new_id("upload")})
    assert missing.status == 404 and "POST /v1/uploads" in missing.body["detail"]
    both = await alice.post(
        "/v1/jobs",
        json={"version": version_id, "input": upload["id"], "input_url": "https://example.com/a"},
    )
    assert both.status == 422 and "one of the two" in both.body["detail"]
    unknown = await alice.post("/v1/jobs", json={"version": version_id, "inptu": upload["id"]})
    assert unknown.status == 422, unknown.body

    # A tampered upload URL is refused.
    status, _ = await _send(
        {**upload, "url": upload["url"].replace("max_bytes=", "max_bytes=9")}, b""
    )
    assert status == 403

    # Expired (its record aged past CLINAI_UPLOAD_TTL_S, 24 h by default): 410.
    meta_path = full_stack.data_dir / "blobs" / "blobs" / "uploads" / upload["id"] / "meta.json"
    meta = msgspec.json.decode(meta_path.read_bytes())
    meta_path.write_bytes(msgspec.json.encode({**meta, "created_at": time.time() - 25 * 3600}))
    expired = await alice.post("/v1/jobs", json={"version": version_id, "input": upload["id"]})
    assert expired.status == 410 and "POST /v1/uploads" in expired.body["detail"]


async def test_an_input_by_url_is_fetched_by_the_executor(
    full_stack: Stack, version_id: str, files: tuple[str, dict[str, bytes]]
) -> None:
    base, served = files
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    served["/in.bin"] = data = b"fetched by the executor\n" * 500
    job = await _job(alice, {"version": version_id, "input_url": f"{base}/in.bin"})
    assert job["status"] == "succeeded", job
    assert job["input_filename"] == "in.bin"
    assert await only_output(job) == data
    # Redirects are followed (each hop guarded).
    hop = await _job(alice, {"version": version_id, "input_url": f"{base}/hop"})
    assert hop["status"] == "succeeded", hop
    assert await only_output(hop) == data


async def test_the_job_view_shows_its_input_url_redacted(
    full_stack: Stack, version_id: str, files: tuple[str, dict[str, bytes]]
) -> None:
    base, served = files
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    served["/signed.bin"] = b"signed input"
    # As a presigned link: a signature in the query, a token as the userinfo.
    host = base.removeprefix("http://")
    url = f"http://tok:pw@{host}/signed.bin?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=60"
    shown = f"http://***@{host}/signed.bin?X-Amz-Signature=***&X-Amz-Expires=***"
    created = await alice.post("/v1/jobs", json={"version": version_id, "input_url": url})
    assert created.status == 202, created.body
    job_path = f"/v1/jobs/{created.body['id']}"
    # Read-your-writes: the view at the job's own sequence already shows it.
    queued = await alice.get(job_path, params={"after_seq": str(created.body["seq"])})
    assert queued.status == 200, queued.body
    assert queued.body["input_url"] == shown
    ended = (await alice.get(job_path, params={"wait": "60"})).body
    assert ended["status"] == "succeeded", ended
    assert ended["input_url"] == shown
    assert SIGNATURE not in str(ended) and "pw@" not in str(ended)
    # The log too holds it redacted; the executor read it whole from the store.
    settings = full_stack.settings
    assert settings.nats_url is not None
    logged = await logged_job_request(settings.nats_url, settings.stream_name, ended["id"])
    assert logged.input_url == shown and logged.input_key
    # A job on an uploaded input has none.
    upload = await _new_upload(alice)
    status, _ = await _send(upload, b"uploaded")
    assert status in (200, 201, 204)
    uploaded = await _job(alice, {"version": version_id, "input": upload["id"]})
    assert uploaded["input_url"] is None


async def test_an_input_url_that_fails_fails_the_job_as_input_unavailable(
    full_stack: Stack, version_id: str, files: tuple[str, dict[str, bytes]]
) -> None:
    base, served = files
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    gone = await _job(alice, {"version": version_id, "input_url": f"{base}/missing"})
    assert gone["status"] == "failed", gone
    assert gone["error_kind"] == "input_unavailable"
    assert "HTTP 404" in gone["error_message"]

    served["/big.bin"] = b"x" * (MAX_INPUT + 1)
    big = await _job(alice, {"version": version_id, "input_url": f"{base}/big.bin"})
    assert big["status"] == "failed" and big["error_kind"] == "input_unavailable", big
    assert str(MAX_INPUT) in big["error_message"]
    assert "CLINAI_MAX_INPUT_BYTES" in big["error_message"]


async def test_an_input_url_to_a_guarded_address_is_refused(
    full_stack: Stack, version_id: str
) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/in.png"):
        reply = await alice.post("/v1/jobs", json={"version": version_id, "input_url": url})
        assert reply.status == 422, reply.body
        assert "public addresses only" in reply.body["detail"]
    bad = await alice.post("/v1/jobs", json={"version": version_id, "input_url": "ftp://x/y"})
    assert bad.status == 422 and "http://" in bad.body["detail"]
