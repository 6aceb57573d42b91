"""Every route's happy path and its main failure, over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import orjson
import pytest

from events import EventStore, JobSucceeded, OutputFile, VersionBuilt
from services.packages import zip_folder
from tests._events import new_event
from tests.api._client import EXAMPLE_MODEL, Client, new_user
from tests.api.conftest import Stack


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


async def test_health_needs_no_key_and_everything_else_does(stack: Stack) -> None:
    anon = Client(stack.url, None)
    assert (await anon.get("/healthz")).status == 200
    assert (await anon.get("/readyz")).status == 200
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/models"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/job_x"),
        ("GET", "/v1/versions/ver_x"),
        ("GET", "/v1/me"),
        ("GET", "/metrics"),
    ]:
        reply = await anon.request(method, path)
        assert reply.status == 401, (method, path)
        assert reply.headers["content-type"] == "application/problem+json"
        assert "Authorization: Bearer" in reply.body["detail"]
    bad = Client(stack.url, "clinai_not-a-key")
    assert (await bad.get("/v1/models")).status == 401


async def test_create_then_read_your_write(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    for _ in range(10):
        created = await alice.post("/v1/models", json={"name": _name(), "description": "d"})
        assert created.status == 201
        seq = created.body["seq"]
        assert created.headers["x-clinai-seq"] == str(seq)
        got = await alice.get(f"/v1/models/{created.body['id']}", params={"after_seq": str(seq)})
        assert got.status == 200, got.body
        assert got.body["name"] == created.body["name"]
    listed = await alice.get("/v1/models", params={"after_seq": str(seq)})
    assert len(listed.body["items"]) == 10


async def _in_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    """A body aiohttp sends with chunked transfer encoding: no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_bodies_without_a_content_length_are_read_to_their_end(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    as_json = {"Content-Type": "application/json"}
    name = _name()
    created = await alice.post(
        "/v1/models", data=_in_chunks(orjson.dumps({"name": name}), 5), headers=as_json
    )
    assert created.status == 201, created.body
    assert created.body["name"] == name
    huge = orjson.dumps({"name": _name(), "description": "x" * (1024 * 1024)})
    too_big = await alice.post("/v1/models", data=_in_chunks(huge, 256 * 1024), headers=as_json)
    assert too_big.status == 413
    assert "limited" in too_big.body["detail"]

    boundary = uuid.uuid4().hex
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="package"; filename="m.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + zip_folder(EXAMPLE_MODEL)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    uploaded = await alice.post(
        f"/v1/models/{created.body['id']}/versions",
        data=_in_chunks(multipart, 1000),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert uploaded.status == 201, uploaded.body
    assert uploaded.body["number"] == 1


async def test_after_seq_past_the_log_is_a_503_with_retry_after(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.get("/v1/models", params={"after_seq": "999999999"})
    assert reply.status == 503
    assert reply.headers["retry-after"] == "1"


async def test_bad_bodies_are_422_with_the_field(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.post("/v1/models", json={"name": "has spaces"})
    assert reply.status == 422
    assert "$.name" in reply.body["detail"]
    reply = await alice.post("/v1/models", json={"name": "ok", "colour": "red"})
    assert reply.status == 422
    reply = await alice.request(
        "POST", "/v1/models", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422
    assert "JSON" in reply.body["detail"]


async def test_names_are_unique_per_owner_in_the_log(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    name = _name()
    replies = await asyncio.gather(
        *(alice.post("/v1/models", json={"name": name}) for _ in range(5))
    )
    assert sorted(r.status for r in replies) == [201, 409, 409, 409, 409]
    assert "pick another name" in next(r for r in replies if r.status == 409).body["detail"]
    # Another owner may use the same name.
    assert (await bob.post("/v1/models", json={"name": name})).status == 201


async def test_private_models_are_invisible_to_others(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    private = await alice.post("/v1/models", json={"name": _name()})
    public = await alice.post("/v1/models", json={"name": _name(), "visibility": "public"})
    seq = str(public.body["seq"])
    hidden = await bob.get(f"/v1/models/{private.body['id']}", params={"after_seq": seq})
    assert hidden.status == 404
    assert (
        await bob.get(f"/v1/models/{public.body['id']}", params={"after_seq": seq})
    ).status == 200
    ids = {m["id"] for m in (await bob.get("/v1/models", params={"after_seq": seq})).body["items"]}
    assert public.body["id"] in ids and private.body["id"] not in ids
    # Nor can they change it.
    patch = await bob.request(
        "PATCH", f"/v1/models/{private.body['id']}", json={"description": "x"}
    )
    assert patch.status == 404


async def test_rename_and_soft_delete_free_the_name(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    first, second = _name(), _name()
    model = (await alice.post("/v1/models", json={"name": first})).body
    renamed = await alice.request("PATCH", f"/v1/models/{model['id']}", json={"name": second})
    assert renamed.status == 202
    got = await alice.get(
        f"/v1/models/{model['id']}", params={"after_seq": str(renamed.body["seq"])}
    )
    assert got.body["name"] == second
    assert (await alice.post("/v1/models", json={"name": first})).status == 201
    assert (await alice.post("/v1/models", json={"name": second})).status == 409
    version = (
        await alice.upload(
            f"/v1/models/{model['id']}/versions", "package", "m.zip", zip_folder(EXAMPLE_MODEL)
        )
    ).body
    deleted = await alice.request("DELETE", f"/v1/models/{model['id']}")
    assert deleted.status == 202
    gone = await alice.get(
        f"/v1/models/{model['id']}", params={"after_seq": str(deleted.body["seq"])}
    )
    assert gone.status == 404
    # Its versions go with it.
    assert (await alice.get(f"/v1/versions/{version['id']}")).status == 404
    assert (await alice.post("/v1/models", json={"name": second})).status == 201


async def test_idempotency_key_acknowledges_a_retry_once(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    name = _name()
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = await alice.post("/v1/models", json={"name": name}, headers=headers)
    again = await alice.post("/v1/models", json={"name": name}, headers=headers)
    assert first.status == again.status == 201
    assert first.body["id"] == again.body["id"]
    assert first.body["seq"] == again.body["seq"]


async def test_upload_versions_numbered_per_model(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": _name()})).body
    package = zip_folder(EXAMPLE_MODEL)
    replies = await asyncio.gather(
        *(
            alice.upload(f"/v1/models/{model['id']}/versions", "package", "m.zip", package)
            for _ in range(3)
        )
    )
    assert all(r.status == 201 for r in replies), [r.body for r in replies]
    assert sorted(r.body["number"] for r in replies) == [1, 2, 3]
    seq = str(max(r.body["seq"] for r in replies))
    version = await alice.get(f"/v1/versions/{replies[0].body['id']}", params={"after_seq": seq})
    assert version.status == 200
    assert version.body["status"] in ("uploaded", "building", "ready", "failed")
    listed = await alice.get(f"/v1/models/{model['id']}/versions", params={"after_seq": seq})
    assert [v["number"] for v in listed.body["items"]] == [1, 2, 3]


async def test_bad_packages_are_refused_and_nothing_is_recorded(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": _name()})).body
    path = f"/v1/models/{model['id']}/versions"
    not_zip = await alice.upload(path, "package", "m.zip", b"this is not a zip")
    assert not_zip.status == 422
    assert "zip" in not_zip.body["detail"].lower()
    too_big = await alice.upload(path, "package", "m.zip", b"0" * (3 * 1024 * 1024))
    assert too_big.status == 413
    assert "limit" in too_big.body["detail"]
    # Read after the model's own event: a refused upload appends nothing after it.
    listed = await alice.get(
        f"/v1/models/{model['id']}/versions", params={"after_seq": model["seq"]}
    )
    assert listed.status == 200
    assert listed.body["items"] == []


async def test_another_users_model_cannot_get_versions(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    model = (await alice.post("/v1/models", json={"name": _name()})).body
    reply = await bob.upload(
        f"/v1/models/{model['id']}/versions", "package", "m.zip", zip_folder(EXAMPLE_MODEL)
    )
    assert reply.status == 404


async def _ready_version(stack: Stack, alice: Client) -> dict[str, str]:
    """Upload a version and mark it built straight in the log (no builder runs here)."""
    model = (await alice.post("/v1/models", json={"name": _name()})).body
    version = (
        await alice.upload(
            f"/v1/models/{model['id']}/versions", "package", "m.zip", zip_folder(EXAMPLE_MODEL)
        )
    ).body
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        history = await store.read_aggregate("version", version["id"])
        seq = await store.append(
            new_event(
                VersionBuilt,
                version["id"],
                actor="test",
                runtime="process",
                artifact="a",
                duration_s=0.1,
            ),
            expected=history.last_seq,
        )
    finally:
        await nc.drain()
    await alice.get(f"/v1/versions/{version['id']}", params={"after_seq": str(seq)})
    return {"model": model["id"], "version": version["id"]}


async def test_jobs_submit_get_list_cancel(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    ids = await _ready_version(stack, alice)
    created = await alice.upload(
        "/v1/jobs",
        "input",
        "in.png",
        b"\x89PNG fake",
        version=ids["version"],
        levels="3",  # example-model's typed inputs: the file and `levels`
        timeout_s="5",
    )
    assert created.status == 202, created.body
    job_id = created.body["id"]
    assert created.body["status"] == "queued"
    assert created.body["inputs"] == {"input": "input-in.png", "levels": 3}
    seq = str(created.body["seq"])
    got = await alice.get(f"/v1/jobs/{job_id}", params={"after_seq": seq})
    assert got.status == 200
    assert got.body["params"] == {} and got.body["input_filename"] == "in.png"
    assert (await bob.get(f"/v1/jobs/{job_id}", params={"after_seq": seq})).status == 404
    listed = await alice.get("/v1/jobs", params={"after_seq": seq})
    assert [j["id"] for j in listed.body["items"]] == [job_id]
    # By model id: its latest ready version runs.
    by_model = await alice.upload("/v1/jobs", "input", "in.png", b"x", model=ids["model"])
    assert by_model.status == 202 and by_model.body["version_id"] == ids["version"]
    assert (await bob.post(f"/v1/jobs/{job_id}/cancel")).status == 404
    canceled = await alice.post(f"/v1/jobs/{job_id}/cancel")
    assert canceled.status == 202
    got = await alice.get(f"/v1/jobs/{job_id}", params={"after_seq": str(canceled.body["seq"])})
    assert got.body["cancel_requested"] is True


async def test_a_version_made_unreadable_takes_no_more_jobs(stack: Stack) -> None:
    # The API keeps ready versions it submitted jobs to, until a model changes.
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    ids = await _ready_version(stack, alice)
    public = await alice.request(
        "PATCH", f"/v1/models/{ids['model']}", json={"visibility": "public"}
    )
    after = {"X-Clinai-After-Seq": str(public.body["seq"])}
    for _ in range(2):
        ran = await bob.upload("/v1/jobs", "input", "in.png", b"x", after, version=ids["version"])
        assert ran.status == 202, ran.body

    private = await alice.request(
        "PATCH", f"/v1/models/{ids['model']}", json={"visibility": "private"}
    )
    after = {"X-Clinai-After-Seq": str(private.body["seq"])}
    refused = await bob.upload("/v1/jobs", "input", "in.png", b"x", after, version=ids["version"])
    assert refused.status == 404, refused.body
    assert (
        await alice.upload("/v1/jobs", "input", "in.png", b"x", after, version=ids["version"])
    ).status == 202

    deleted = await alice.request("DELETE", f"/v1/models/{ids['model']}")
    after = {"X-Clinai-After-Seq": str(deleted.body["seq"])}
    gone = await alice.upload("/v1/jobs", "input", "in.png", b"x", after, version=ids["version"])
    assert gone.status == 404, gone.body


async def test_job_bad_requests(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    ids = await _ready_version(stack, alice)
    no_version = await alice.upload("/v1/jobs", "input", "in.png", b"x")
    assert no_version.status == 422
    bad_params = await alice.upload(
        "/v1/jobs", "input", "a", b"x", version=ids["version"], params="[1]"
    )
    assert bad_params.status == 422
    bad_timeout = await alice.upload(
        "/v1/jobs", "input", "a", b"x", version=ids["version"], timeout_s="99999"
    )
    assert bad_timeout.status == 422
    private_hook = await alice.upload(
        "/v1/jobs", "input", "a", b"x", version=ids["version"], webhook="http://10.0.0.7/hook"
    )
    assert private_hook.status == 422
    assert "public" in private_hook.body["detail"]
    too_big = await alice.upload(
        "/v1/jobs", "input", "a", b"0" * (2 * 1024 * 1024), version=ids["version"]
    )
    assert too_big.status == 413
    model = (await alice.post("/v1/models", json={"name": _name()})).body
    version = (
        await alice.upload(
            f"/v1/models/{model['id']}/versions", "package", "m.zip", zip_folder(EXAMPLE_MODEL)
        )
    ).body
    not_ready = await alice.upload(
        "/v1/jobs",
        "input",
        "a",
        b"x",
        {"X-Clinai-After-Seq": str(version["seq"])},
        version=version["id"],
    )
    assert not_ready.status == 409
    assert "ready" in not_ready.body["detail"]
    # Refused uploads leave nothing behind in the store's spool folder.
    assert list((stack.settings.blob_root / "tmp").glob("upload-*")) == []


async def test_long_poll_returns_when_the_job_ends(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    ids = await _ready_version(stack, alice)
    created = (await alice.upload("/v1/jobs", "input", "in.png", b"x", version=ids["version"])).body
    job_id = created["id"]
    poll = asyncio.create_task(
        alice.get(f"/v1/jobs/{job_id}", params={"wait": "20", "after_seq": str(created["seq"])})
    )
    queued = await alice.get(f"/v1/jobs/{job_id}", params={"after_seq": str(created["seq"])})
    assert queued.body["status"] == "queued"
    assert not poll.done()
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        history = await store.read_aggregate("job", job_id)
        await store.append(
            new_event(
                JobSucceeded,
                job_id,
                actor="test",
                result={"ok": 1},
                outputs=(
                    OutputFile(name="out.txt", key=f"outputs/{job_id}/out.txt", size_bytes=2),
                ),
            ),
            expected=history.last_seq,
        )
    finally:
        await nc.drain()
    reply = await asyncio.wait_for(poll, timeout=10)
    assert reply.body["status"] == "succeeded"
    assert reply.body["result"] == {"ok": 1}
    assert reply.body["outputs"][0]["url"].startswith(stack.url + "/v1/blobs/outputs/")


async def test_api_keys_issue_list_revoke(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    issued = await alice.post("/v1/api-keys", json={"name": "ci"})
    assert issued.status == 201
    second = Client(stack.url, issued.body["secret"])
    deadline = asyncio.get_running_loop().time() + 10
    while (await second.get("/v1/me")).status != 200:
        assert asyncio.get_running_loop().time() < deadline
    listed = await alice.get("/v1/api-keys")
    assert {k["name"] for k in listed.body["items"]} >= {"default", "ci"}
    assert all("hash" not in key for k in listed.body["items"] for key in k)
    assert (await alice.request("DELETE", f"/v1/api-keys/{issued.body['id']}")).status == 202
    deadline = asyncio.get_running_loop().time() + 10
    while (await second.get("/v1/me")).status != 401:
        assert asyncio.get_running_loop().time() < deadline
    # Only admins create users.
    assert (await alice.post("/v1/users", json={"name": "eve"})).status == 403


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/models/x/y/z"])
async def test_unknown_routes_are_problem_json(stack: Stack, path: str) -> None:
    reply = await Client(stack.url, stack.admin_key).get(path)
    assert reply.status == 404
    assert reply.headers["content-type"] == "application/problem+json"
