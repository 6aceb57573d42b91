"""An Idempotency-Key reused: the same request replays the first answer; a different
request is refused (422) and changes nothing the first one stored (its input, package or
record), on both blob backends, with the job still running on its own input."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats

from events import EventStore, VersionBuilt
from services.packages import zip_folder
from tests._events import new_event
from tests.api._client import EXAMPLE_MODEL, Client, new_user
from tests.api._idempotency import new_key, refused, stored_bytes
from tests.api.conftest import Stack

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


# --- models, versions, webhooks (API and projector only, file backend) --------------


async def test_a_model_key_reused_with_another_name_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    key, name = new_key(), f"idem-{uuid.uuid4().hex[:8]}"
    first = await alice.post("/v1/models", json={"name": name}, headers=key)
    assert first.status == 201, first.body
    again = await alice.post("/v1/models", json={"name": name}, headers=key)
    assert again.status == 201 and again.body == first.body
    other = await alice.post("/v1/models", json={"name": name + "-2"}, headers=key)
    refused(other, first.body["id"])
    private = await alice.post(
        "/v1/models", json={"name": name, "visibility": "public"}, headers=key
    )
    refused(private, first.body["id"])
    seen = {"after_seq": str(first.body["seq"])}  # the read models hold it (no 404 race)
    got = await alice.get(f"/v1/models/{first.body['id']}", params=seen)
    assert got.body["name"] == name and got.body["visibility"] == "private"
    listed = await alice.get("/v1/models", params=seen)
    assert [m["id"] for m in listed.body["items"]] == [first.body["id"]]


async def test_a_version_key_reused_with_another_package_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": f"v-{uuid.uuid4().hex[:8]}"})).body
    path, key = f"/v1/models/{model['id']}/versions", new_key()
    package = zip_folder(PACKAGES / "noop")
    first = await alice.upload(path, "package", "p.zip", package, headers=key)
    assert first.status == 201, first.body
    again = await alice.upload(path, "package", "p.zip", package, headers=key)
    assert again.status == 201 and again.body["id"] == first.body["id"]
    other_package = zip_folder(PACKAGES / "write_outputs")
    other = await alice.upload(path, "package", "p.zip", other_package, headers=key)
    refused(other, first.body["id"])
    stored = await stored_bytes(stack, f"packages/{first.body['id']}/package.zip")
    assert stored == package
    listed = await alice.get(path, params={"after_seq": str(first.body["seq"])})
    assert [v["number"] for v in listed.body["items"]] == [1]


async def test_two_versions_at_once_under_one_key_keep_one_package(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": f"v-{uuid.uuid4().hex[:8]}"})).body
    path = f"/v1/models/{model['id']}/versions"
    packages = [zip_folder(PACKAGES / name) for name in ("noop", "write_outputs")]
    for _ in range(3):
        key = new_key()
        replies = await asyncio.gather(
            *(alice.upload(path, "package", "p.zip", p, headers=key) for p in packages)
        )
        made = [(r, p) for r, p in zip(replies, packages, strict=True) if r.status == 201]
        assert len(made) == 1, [(r.status, r.body) for r in replies]
        [(created, package)] = made
        assert next(r.status for r in replies if r is not created) in (409, 422)
        assert await stored_bytes(stack, f"packages/{created.body['id']}/package.zip") == package


async def test_a_webhook_key_reused_with_another_url_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    key = new_key()
    body = {"url": "https://example.com/a", "events": ["job.*"]}
    first = await alice.post("/v1/webhooks", json=body, headers=key)
    assert first.status == 201, first.body
    again = await alice.post("/v1/webhooks", json=body, headers=key)
    assert again.status == 201 and again.body["id"] == first.body["id"]
    other = await alice.post(
        "/v1/webhooks", json={**body, "url": "https://example.com/b"}, headers=key
    )
    refused(other, first.body["id"])
    got = await alice.get(
        f"/v1/webhooks/{first.body['id']}", params={"after_seq": str(first.body["seq"])}
    )
    assert got.body["url"] == "https://example.com/a"


async def _built_version(stack: Stack, alice: Client, model_id: str, package: bytes) -> str:
    """A version of `package`, marked built straight in the log (no builder runs in
    `stack`)."""
    path = f"/v1/models/{model_id}/versions"
    version = (await alice.upload(path, "package", "p.zip", package)).body
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


async def _legacy_version(stack: Stack, alice: Client) -> str:
    """A version of the echo model (run(input_path, output_dir))."""
    model = (await alice.post("/v1/models", json={"name": f"e-{uuid.uuid4().hex[:8]}"})).body
    return await _built_version(stack, alice, model["id"], zip_folder(PACKAGES / "noop"))


async def test_a_job_key_reused_with_another_file_keeps_the_first_input(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    version, key = await _legacy_version(stack, alice), new_key()
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
        refused(reply, job_id)
    assert await stored_bytes(stack, f"inputs/{job_id}") == photo
    got = await alice.get(f"/v1/jobs/{job_id}", params={"after_seq": str(first.body["seq"])})
    assert got.body["input_filename"] == "photo.png" and got.body["params"] == {}
    assert got.body["input_size_bytes"] == len(photo)


async def test_two_jobs_at_once_under_one_key_never_overwrite_each_other(stack: Stack) -> None:
    """Different files sent at the same moment under one key: one job is made, and its
    stored input is its own file, whole; the other request is refused (422), or told
    to come again (409) while the first one is still being made."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    version = await _legacy_version(stack, alice)
    for _ in range(5):
        key = new_key()
        bodies = [bytes([mark]) * (200_000 + n) for n, mark in enumerate(b"ab")]
        replies = await asyncio.gather(
            *(
                alice.upload("/v1/jobs", "input", f"{n}.bin", body, key, version=version)
                for n, body in enumerate(bodies)
            )
        )
        made = [(r, b) for r, b in zip(replies, bodies, strict=True) if r.status == 202]
        assert len(made) == 1, [(r.status, r.body) for r in replies]
        [(created, body)] = made
        [other] = [r for r in replies if r is not created]
        assert other.status in (409, 422), other.body
        assert await stored_bytes(stack, f"inputs/{created.body['id']}") == body
        job = await alice.get(
            f"/v1/jobs/{created.body['id']}", params={"after_seq": str(created.body["seq"])}
        )
        assert job.body["input_size_bytes"] == len(body)


async def test_an_upload_key_reused_with_another_file_name_is_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    key = new_key()
    body = {"filename": "scan.png", "content_type": "image/png"}
    first = await alice.post("/v1/uploads", json=body, headers=key)
    assert first.status == 201, first.body
    again = await alice.post("/v1/uploads", json=body, headers=key)
    assert again.status == 201 and again.body["id"] == first.body["id"]
    other = await alice.post("/v1/uploads", json={**body, "filename": "other.png"}, headers=key)
    refused(other, first.body["id"])
    meta = await stored_bytes(stack, f"uploads/{first.body['id']}/meta.json")
    assert b'"scan.png"' in meta and b"other.png" not in meta


async def test_a_typed_job_key_reused_with_another_file_keeps_the_first(stack: Stack) -> None:
    """The example model's run() takes typed inputs (a file `input` and `levels`)."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": f"t-{uuid.uuid4().hex[:8]}"})).body
    version = await _built_version(stack, alice, model["id"], zip_folder(EXAMPLE_MODEL))
    key, photo = new_key(), b"\x89PNG typed first"
    first = await alice.upload(
        "/v1/jobs", "input", "in.png", photo, key, version=version, levels="3"
    )
    assert first.status == 202, first.body
    job_id = first.body["id"]
    for name, data, levels in [("in.png", b"\x89PNG other!", "3"), ("in.png", photo, "4")]:
        reply = await alice.upload(
            "/v1/jobs", "input", name, data, key, version=version, levels=levels
        )
        refused(reply, job_id)
    again = await alice.upload(
        "/v1/jobs", "input", "in.png", photo, key, version=version, levels="3"
    )
    assert again.status == 202 and again.body["id"] == job_id
    assert await stored_bytes(stack, f"inputs/{job_id}") == photo
    got = await alice.get(f"/v1/jobs/{job_id}", params={"after_seq": str(first.body["seq"])})
    assert got.body["inputs"]["levels"] == 3
