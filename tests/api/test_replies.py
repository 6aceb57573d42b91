"""What commands answer: the resource they changed, and refusals that say what was
refused in punctuated sentences."""

from __future__ import annotations

import uuid

from tests.api._client import new_user
from tests.api.conftest import Stack
from tests.api.test_api import _ready_version


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


async def test_details_are_punctuated_sentences(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    model = (await alice.post("/v1/models", json={"name": _name()})).body
    not_zip = await alice.upload(
        f"/v1/models/{model['id']}/versions", "package", "m.zip", b"not a zip"
    )
    assert not_zip.status == 422
    assert "not a readable zip archive. Upload a .zip file" in not_zip.body["detail"]
    missing = await alice.request("DELETE", "/v1/models/mdl_0000000000")
    assert missing.status == 404
    assert "model mdl_0000000000 not found: check the id" in missing.body["detail"]


async def test_patch_and_cancel_answer_with_the_resource(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    name = _name()
    model = (await alice.post("/v1/models", json={"name": name})).body
    patched = await alice.request(
        "PATCH", f"/v1/models/{model['id']}", json={"description": "new words"}
    )
    assert patched.status == 202, patched.body
    assert patched.body["id"] == model["id"]
    assert patched.body["name"] == name
    assert patched.body["description"] == "new words"
    assert patched.body["visibility"] == "private"
    assert patched.body["seq"] > model["seq"]

    ids = await _ready_version(stack, alice)
    job = (await alice.upload("/v1/jobs", "input", "in.png", b"x", version=ids["version"])).body
    canceled = await alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status == 202, canceled.body
    assert canceled.body["id"] == job["id"]
    assert canceled.body["cancel_requested"] is True
    assert canceled.body["version_id"] == ids["version"]
    assert canceled.body["input_filename"] == "in.png"
    assert canceled.body["seq"] > job["seq"]


async def test_another_users_public_model_refuses_changes_saying_what_is_refused(
    stack: Stack,
) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    public = (await alice.post("/v1/models", json={"name": _name(), "visibility": "public"})).body
    after = {"X-Clinai-After-Seq": str(public["seq"])}
    for method, path, body in [
        ("PATCH", f"/v1/models/{public['id']}", {"description": "mine now"}),
        ("DELETE", f"/v1/models/{public['id']}", None),
    ]:
        reply = await bob.request(method, path, json=body, headers=after)
        assert reply.status == 403, (method, reply.body)
        detail = reply.body["detail"]
        assert "only its owner can change it, delete it or upload versions" in detail
        assert "visible to their owner only" not in detail
    upload = await bob.upload(f"/v1/models/{public['id']}/versions", "package", "m.zip", b"PK")
    assert upload.status == 403
    assert "you may run it" in upload.body["detail"]
    # Bob may still see it.
    assert (await bob.get(f"/v1/models/{public['id']}")).status == 200
