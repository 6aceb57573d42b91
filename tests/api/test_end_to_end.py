"""Upload to result through the HTTP API, with every service running as `clinai up` runs
them: projector, API, builder and executor on the process runtime (bubblewrap), on the
docker runtime, and on the process runtime with the `s3` blob store (a real S3 server,
moto's) as two hosts: the API and projector on one data folder, the builder and the
executor on another, the bucket the only store they share."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from PIL import Image

from services.packages import zip_folder
from tests._infra import needs_bubblewrap
from tests._s3 import create_bucket, s3_env
from tests.api._client import EXAMPLE_MODEL, Client, new_user
from tests.api.conftest import Stack, running_stack
from tests.runtimes.conftest import BASE_IMAGE, engine_problem

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


@pytest.fixture(scope="module", params=["process", "docker", "process-s3"])
def full_stack(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Every service, on the process runtime and on the docker runtime in turn, then on
    the process runtime with S3 and no shared disk."""
    runtime, _, backend = str(request.param).partition("-")
    env_for: dict[str, dict[str, str]] = {}
    if backend == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        stack_env = {**stack_env, **s3_env(endpoint, asyncio.run(create_bucket(endpoint)))}
        worker_host = str(tmp_path_factory.mktemp("worker-host"))
        env_for = {name: {"CLINAI_DATA_DIR": worker_host} for name in ("builder", "executor")}
    if runtime == "process":
        needs_bubblewrap()
    else:
        reason = engine_problem()
        if reason is not None:
            pytest.skip(reason)
    env = {**stack_env, "CLINAI_RUNTIME": runtime, "CLINAI_DOCKER_BASE_IMAGE": BASE_IMAGE}
    services = ["projector", "api", "builder", "executor"]
    with running_stack(env, services, env_for=env_for) as running:
        yield msgspec.structs.replace(
            running, other_data_dirs=tuple(Path(e["CLINAI_DATA_DIR"]) for e in env_for.values())
        )


async def _wait_version(client: Client, version_id: str, timeout: float = 240) -> dict:  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        version = (await client.get(f"/v1/versions/{version_id}")).body
        if version["status"] in ("ready", "failed"):
            return version  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, f"build did not end: {version}"
        await asyncio.sleep(0.2)  # polling interval for a build that takes seconds


async def _run(client: Client, version_id: str, png: bytes, **fields: str) -> dict:  # type: ignore[type-arg]
    created = await client.upload("/v1/jobs", "input", "in.png", png, version=version_id, **fields)
    assert created.status == 202, created.body
    job = await client.get(
        f"/v1/jobs/{created.body['id']}",
        params={"wait": "60", "after_seq": str(created.body["seq"])},
    )
    return job.body  # type: ignore[no-any-return]


def _png(width: int = 32, height: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


async def _upload(client: Client, package: bytes) -> str:
    model = (await client.post("/v1/models", json={"name": f"m-{uuid.uuid4().hex[:8]}"})).body
    reply = await client.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", package)
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


async def test_example_model_from_upload_to_grayscale_output(full_stack: Stack) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    # A unique file makes it a new package, so it is built here, not reused from a cache.
    package = zip_folder(EXAMPLE_MODEL, extra={"build-id.txt": uuid.uuid4().hex})
    version_id = await _upload(alice, package)
    # The build log is readable while building: chunks appear before the version is ready.
    seen_while_building = False
    deadline = asyncio.get_running_loop().time() + 240
    while True:
        log = (await alice.get(f"/v1/versions/{version_id}/log")).body
        if log["status"] == "building" and log["chunks"]:
            seen_while_building = True
        if log["status"] in ("ready", "failed"):
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)  # polling interval while pip runs
    version = await _wait_version(alice, version_id)
    assert version["status"] == "ready", version
    assert seen_while_building
    build_log = "".join(c["text"] for c in log["chunks"])
    assert "unpack the package" in build_log  # a layer cache may skip pip's own output
    # Users see what ran, not where the platform keeps its files.
    for host_path in (str(full_stack.data_dir), str(full_stack.data_dir.resolve()), ".venv/"):
        assert host_path not in build_log, host_path

    job = await _run(alice, version_id, _png(32, 24))
    assert job["status"] == "succeeded", job
    assert job["result"]["width"] == 32 and job["result"]["height"] == 24
    assert job["result"]["mode"] == "RGB"
    [output] = job["outputs"]
    assert output["name"] == "grayscale.png"
    async with aiohttp.ClientSession() as http, http.get(output["url"]) as resp:
        assert resp.status == 200
        image = Image.open(io.BytesIO(await resp.read()))
    assert image.mode == "L"
    assert image.size == (32, 24)
    if full_stack.env.get("CLINAI_BLOB_BACKEND") != "s3":
        # A signed link is the only credential: tampering with it is refused. (S3 checks
        # its own presigned links; moto, without its IAM checks, does not.)
        async with aiohttp.ClientSession() as http, http.get(output["url"] + "0") as resp:
            assert resp.status == 403
    else:
        # Straight from the storage, never through the API; no blob on either host's disk.
        assert output["url"].startswith(full_stack.env["CLINAI_S3_ENDPOINT_URL"])
        assert full_stack.other_data_dirs
        for data_dir in (full_stack.data_dir, *full_stack.other_data_dirs):
            # (The API's data folder is the file-backend stacks' too: it may hold theirs.)
            assert not list((data_dir / "blobs").rglob(f"*{job['id']}*")), data_dir
            assert not any((data_dir / "spool").glob("*")), data_dir


@pytest.mark.parametrize(
    ("package", "status", "kind"),
    [
        ("raises", "failed", "model_error"),
        ("bad_result", "failed", "model_error"),
        ("crash", "failed", "crashed"),
        ("sleeper", "failed", "timeout"),
    ],
)
async def test_hostile_packages_end_in_the_right_state(
    full_stack: Stack, tmp_path: Path, package: str, status: str, kind: str
) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    folder = tmp_path / package
    shutil.copytree(PACKAGES / package, folder)
    version_id = await _upload(alice, zip_folder(folder))
    assert (await _wait_version(alice, version_id))["status"] == "ready"
    job = await _run(alice, version_id, _png(), timeout_s="3")
    assert job["status"] == status, job
    assert job["error_kind"] == kind
    assert job["error_message"]
    # The platform is still healthy: a no-op model runs right after.
    noop = await _upload(alice, zip_folder(PACKAGES / "noop"))
    assert (await _wait_version(alice, noop))["status"] == "ready"
    healthy = await _run(alice, noop, _png())
    assert healthy["status"] == "succeeded"
    # What the model printed is the job's log, readable by its owner only.
    log = await alice.get(f"/v1/jobs/{healthy['id']}/log")
    assert log.status == 200 and b"hello from run" in log.body
    assert log.headers["content-type"].startswith("text/plain")
    bob = await new_user(full_stack.url, full_stack.admin_key, "bob")
    assert (await bob.get(f"/v1/jobs/{healthy['id']}/log")).status == 404


async def test_cancel_a_running_job(full_stack: Stack) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    version_id = await _upload(alice, zip_folder(PACKAGES / "sleeper"))
    assert (await _wait_version(alice, version_id))["status"] == "ready"
    created = (
        await alice.upload("/v1/jobs", "input", "in.png", _png(), version=version_id,
                           timeout_s="60")
    ).body  # fmt: skip
    deadline = asyncio.get_running_loop().time() + 30
    while (await alice.get(f"/v1/jobs/{created['id']}")).body["status"] != "running":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)  # polling interval until the job starts
    started = asyncio.get_running_loop().time()
    assert (await alice.post(f"/v1/jobs/{created['id']}/cancel")).status == 202
    job = (await alice.get(f"/v1/jobs/{created['id']}", params={"wait": "10"})).body
    assert job["status"] == "canceled"
    assert asyncio.get_running_loop().time() - started < 3


async def test_a_submission_with_wait_answers_with_the_ended_job(full_stack: Stack) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    noop = await _upload(alice, zip_folder(PACKAGES / "noop"))
    assert (await _wait_version(alice, noop))["status"] == "ready"
    png = _png()
    done = await alice.upload("/v1/jobs?wait=60", "input", "in.png", png, version=noop)
    assert done.status == 200, done.body
    assert done.body["status"] == "succeeded" and done.body["result"]["bytes"] == len(png)
    assert [o["name"] for o in done.body["outputs"]] == ["echo.txt"]
    assert done.body["seq"] > 0
    # The same asked for as Replicate's clients ask: `Prefer: wait=N`, or a bare `wait`;
    # `?wait=` wins over the header.
    for prefer in ("wait=60", "respond-async, wait"):
        preferred = await alice.upload(
            "/v1/jobs", "input", "in.png", png, headers={"Prefer": prefer}, version=noop
        )
        assert preferred.status == 200 and preferred.body["status"] == "succeeded", prefer
    at_once = await alice.upload(
        "/v1/jobs?wait=0", "input", "in.png", png, headers={"Prefer": "wait=60"}, version=noop
    )
    assert at_once.status == 202, at_once.body
    # Past the wait, the job as it is then, to be polled as after any submission.
    sleeper = await _upload(alice, zip_folder(PACKAGES / "sleeper"))
    assert (await _wait_version(alice, sleeper))["status"] == "ready"
    pending = await alice.upload("/v1/jobs?wait=0.5", "input", "in.png", png, version=sleeper)
    assert pending.status == 202, pending.body
    assert pending.body["status"] in ("queued", "running")
    assert (await alice.post(f"/v1/jobs/{pending.body['id']}/cancel")).status == 202
    bad = await alice.upload("/v1/jobs?wait=soon", "input", "in.png", png, version=noop)
    assert bad.status == 422 and "wait" in bad.body["detail"]
    headers = {"Prefer": "wait=soon"}
    bad = await alice.upload("/v1/jobs", "input", "in.png", png, headers=headers, version=noop)
    assert bad.status == 422 and "wait" in bad.body["detail"]


async def test_a_large_result_is_answered_inline_while_the_event_holds_its_claim_check(
    full_stack: Stack,
) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    version_id = await _upload(alice, zip_folder(PACKAGES / "big_result"))
    assert (await _wait_version(alice, version_id))["status"] == "ready"
    size = 2 * 1024 * 1024
    job = await _run(alice, version_id, _png(), params=f'{{"size": {size}}}')
    assert job["status"] == "succeeded", {k: v for k, v in job.items() if k != "result"}
    expected = {"blob": "x" * size, "end": "fin ✓"}
    assert job["result"] == expected  # inline, as for a small result
    ref = job["result_blob"]
    assert ref["size_bytes"] > size and "key" not in ref
    # The result alone, and by its signed link: the same bytes, with the recorded hash.
    alone = await alice.get(f"/v1/jobs/{job['id']}/result")
    assert alone.status == 200 and alone.body == expected
    async with aiohttp.ClientSession() as http, http.get(ref["url"]) as resp:
        assert resp.status == 200
        assert hashlib.sha256(await resp.read()).hexdigest() == ref["sha256"]
    # A list names it without carrying it.
    listed = (await alice.get("/v1/jobs")).body["items"]
    [item] = [j for j in listed if j["id"] == job["id"]]
    assert item["result"] is None and item["result_blob"]["sha256"] == ref["sha256"]
    # Someone else's job's result is not found.
    bob = await new_user(full_stack.url, full_stack.admin_key, "bob")
    assert (await bob.get(f"/v1/jobs/{job['id']}/result")).status == 404
    # A small result stays in the event and answers the same way.
    small = await _run(alice, version_id, _png(), params='{"size": 3}')
    assert small["result"] == {"blob": "xxx", "end": "fin ✓"} and small["result_blob"] is None
    assert (await alice.get(f"/v1/jobs/{small['id']}/result")).body == small["result"]
    # A list of outputs too long for an event is read back from its blob.
    many = await _run(alice, version_id, _png(), params='{"size": 3, "outputs": 300}')
    assert many["status"] == "succeeded" and len(many["outputs"]) == 300
    listed_outputs = (await alice.get(f"/v1/jobs/{many['id']}/outputs")).body["items"]
    assert [o["name"] for o in listed_outputs] == [o["name"] for o in many["outputs"]]
    name = "d" * 200 + "/" + "e" * 200 + "/0299-" + "f" * 200
    [last] = [o for o in listed_outputs if o["name"] == name]
    async with aiohttp.ClientSession() as http, http.get(last["url"]) as resp:
        assert resp.status == 200 and await resp.read() == b"299"


async def test_the_result_of_a_job_without_one_is_a_409_that_says_why(full_stack: Stack) -> None:
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    sleeper = await _upload(alice, zip_folder(PACKAGES / "sleeper"))
    assert (await _wait_version(alice, sleeper))["status"] == "ready"
    created = (
        await alice.upload("/v1/jobs", "input", "in.png", _png(), version=sleeper)
    ).body  # fmt: skip
    after = {"after_seq": str(created["seq"])}
    pending = await alice.get(f"/v1/jobs/{created['id']}/result", params=after)
    assert pending.status == 409 and "?wait=" in pending.body["detail"]
    assert (await alice.post(f"/v1/jobs/{created['id']}/cancel")).status == 202
    ended = await alice.get(f"/v1/jobs/{created['id']}", params={"wait": "10"})
    assert ended.body["status"] == "canceled"
    canceled = await alice.get(f"/v1/jobs/{created['id']}/result")
    assert canceled.status == 409 and "error_kind" in canceled.body["detail"]


async def test_a_result_with_a_nul_fails_the_job_and_everyone_carries_on(full_stack: Stack) -> None:
    """`return {"x": "a\\x00b"}` used to succeed, and the projector then failed on that
    event forever: every user's reads froze while /readyz said ready."""
    alice = await new_user(full_stack.url, full_stack.admin_key, "alice")
    version_id = await _upload(alice, zip_folder(PACKAGES / "bad_result"))
    assert (await _wait_version(alice, version_id))["status"] == "ready"
    # Refused by the runner, and by the host when the model switches the runner's check off.
    for kind, where in [("nul", "$.text[1]"), ("unchecked_nul", "$.x")]:
        job = await _run(alice, version_id, _png(), params=f'{{"kind": "{kind}"}}')
        assert (job["status"], job["error_kind"]) == ("failed", "model_error"), job
        assert (
            f"{where} contains a NUL character (\\u0000), which cannot be stored"
            in (job["error_message"])
        )
    async with aiohttp.ClientSession() as http, http.get(f"{full_stack.url}/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["quarantined_events"] == 0
    bob = await new_user(full_stack.url, full_stack.admin_key, "bob")
    noop = await _upload(bob, zip_folder(PACKAGES / "noop"))
    assert (await _wait_version(bob, noop))["status"] == "ready"
    assert (await _run(bob, noop, _png()))["status"] == "succeeded"
