"""Typed inputs through the real stack (file backend, process runtime under
bubblewrap): the schema endpoint, inputs checked before anything is queued (422), a
typed job with a file and a float (multipart, an upload id, a URL), defaults recorded
in the job's event, a declared result checked, the legacy form unchanged, and each
version's own OpenAPI document."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from events import TERMINAL_JOB_STATUSES, JobRequested
from projections.db import create_pool
from services.api._key_lock import job_held
from services.api.routes_uploads import upload_job_id
from services.domain.context import CommandContext
from tests._events import logged_job_request
from tests._infra import http_files, needs_bubblewrap
from tests.api._client import Client, new_user, ready_version
from tests.api.conftest import Stack, running_stack

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


@pytest.fixture(scope="module")
def full_stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    needs_bubblewrap()
    env = {**stack_env, "CLINAI_INPUT_URL_ALLOW_NETWORKS": "127.0.0.0/8"}
    with running_stack(env, ["projector", "api", "builder", "executor"]) as running:
        yield running


class _Versions:
    def __init__(self, owner_key: str, typed: str, legacy: str) -> None:
        self.owner_key = owner_key
        self.typed = typed
        self.legacy = legacy


@pytest.fixture(scope="module")
def versions(full_stack: Stack) -> _Versions:
    """A ready typed version (tests/packages/typed) and a legacy one (noop), private."""

    async def build() -> _Versions:
        owner = await new_user(full_stack.url, full_stack.admin_key, "typist")
        ids = await asyncio.gather(ready_version(owner, "typed"), ready_version(owner, "noop"))
        assert owner.key is not None
        return _Versions(owner.key, ids[0], ids[1])

    return asyncio.run(build())


@pytest.fixture
async def owner(full_stack: Stack, versions: _Versions) -> Client:
    return Client(full_stack.url, versions.owner_key)


def _form(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for key, value in fields.items():
        form.add_field(key, value)
    for field, name, content in files:
        form.add_field(field, io.BytesIO(content), filename=name)
    return form


async def _ended(client: Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}", params={"wait": "30"})).body
        if job["status"] in TERMINAL_JOB_STATUSES:
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job


async def _requested(full_stack: Stack, job_id: str) -> JobRequested:
    settings = full_stack.settings
    assert settings.nats_url is not None
    return await logged_job_request(settings.nats_url, settings.stream_name, job_id)


async def test_the_schema_endpoint_serves_each_version_s_inputs_as_json_schema(
    full_stack: Stack, versions: _Versions, owner: Client
) -> None:
    typed = await owner.get(f"/v1/versions/{versions.typed}/schema")
    assert typed.status == 200, typed.body
    schema = typed.body
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["image"] and schema["additionalProperties"] is False
    props = schema["properties"]
    assert list(props) == ["image", "scale", "mode", "tags", "note", "more", "wrong"]
    assert props["image"]["x-clinai-file"] is True and props["image"]["description"] == "any file"
    assert props["scale"] == {
        "description": "how much",
        "type": "number",
        "minimum": 0.0,
        "maximum": 1.0,
        "default": 0.5,
    }
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert schema["x-clinai-output"]["title"] == "Result"
    legacy = await owner.get(f"/v1/versions/{versions.legacy}/schema")
    assert legacy.status == 200 and legacy.body["x-clinai-form"] == "legacy"
    # Visibility as the version's own: another user's private version is not found.
    mallory = await new_user(full_stack.url, full_stack.admin_key, "mallory")
    hidden = await mallory.get(f"/v1/versions/{versions.typed}/schema")
    assert hidden.status == 404
    assert (
        await Client(full_stack.url, None).get(f"/v1/versions/{versions.typed}/schema")
    ).status == 401


async def test_a_ready_version_has_its_own_openapi_document_with_its_typed_inputs(
    full_stack: Stack, versions: _Versions, owner: Client
) -> None:
    reply = await owner.get(f"/v1/versions/{versions.typed}/openapi.json")
    assert reply.status == 200, reply.body
    document = reply.body
    validate(document)  # OpenAPI 3.1
    assert set(document["paths"]) == {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/uploads",
    }
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]
    assert form["required"] == ["version", "image"]
    assert form["properties"]["version"]["const"] == versions.typed
    image = form["properties"]["image"]
    assert image["format"] == "binary" and image["x-clinai-file"] is True
    assert form["properties"]["scale"]["maximum"] == 1.0
    assert form["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert form["additionalProperties"] is False
    as_json = body["application/json"]["schema"]
    assert as_json["required"] == ["version", "inputs"]
    inputs = document["components"]["schemas"]["InputsJson"]
    assert inputs["properties"]["image"]["type"] == "string"
    assert "format" not in inputs["properties"]["image"]  # an upload id or a URL
    result = document["paths"]["/v1/jobs/{job_id}/result"]["get"]["responses"]["200"]
    assert result["content"]["application/json"]["schema"]["title"] == "Result"
    legacy = await owner.get(f"/v1/versions/{versions.legacy}/openapi.json")
    assert legacy.status == 200
    validate(legacy.body)
    legacy_form = legacy.body["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert legacy_form["multipart/form-data"]["schema"]["required"] == ["version", "input"]
    # Visibility as the version's own: another user's private version is not found.
    mallory = await new_user(full_stack.url, full_stack.admin_key, "mallory")
    assert (await mallory.get(f"/v1/versions/{versions.typed}/openapi.json")).status == 404
    anonymous = Client(full_stack.url, None)
    assert (await anonymous.get(f"/v1/versions/{versions.typed}/openapi.json")).status == 401


@pytest.mark.parametrize(
    ("fields", "files", "field", "says"),
    [
        (
            {"scale": "3"},
            [("image", "a.bin", b"x")],
            "scale",
            "expected a number >= 0 and <= 1, got 3",
        ),
        ({"scale": "lots"}, [("image", "a.bin", b"x")], "scale", 'got "lots"'),
        ({"mode": "medium"}, [("image", "a.bin", b"x")], "mode", "expected one of 'fast', 'slow'"),
        (
            {"tags": "[1]"},
            [("image", "a.bin", b"x")],
            "tags",
            "expected a list of (a string), got 1",
        ),
        ({}, [], "image", "input 'image' is required: expected a file"),
        ({"colour": "red"}, [("image", "a.bin", b"x")], "colour", "not 'colour'"),
        (
            {},
            [("image", "a.bin", b"x"), ("scale", "b.bin", b"y")],
            "scale",
            "not a file",
        ),
    ],
)
async def test_bad_inputs_are_refused_with_422_before_anything_is_queued(
    versions: _Versions,
    owner: Client,
    fields: dict[str, str],
    files: list[tuple[str, str, bytes]],
    field: str,
    says: str,
) -> None:
    before = (await owner.get("/v1/jobs", params={"limit": "100"})).body["items"]
    reply = await owner.post("/v1/jobs", data=_form({"version": versions.typed, **fields}, files))
    assert reply.status == 422, reply.body
    assert reply.body["field"] == field and says in reply.body["detail"], reply.body
    after = (await owner.get("/v1/jobs", params={"limit": "100"})).body["items"]
    assert len(after) == len(before)


async def test_json_inputs_are_checked_too_and_params_are_refused(
    versions: _Versions, owner: Client
) -> None:
    bad = await owner.post(
        "/v1/jobs", json={"version": versions.typed, "inputs": {"image": "upload_x", "scale": -1}}
    )
    assert bad.status == 422 and bad.body["field"] == "scale" and bad.body["got"] == "-1", bad.body
    params = await owner.post(
        "/v1/jobs", json={"version": versions.typed, "inputs": {}, "params": {"scale": 1}}
    )
    assert params.status == 422 and "not 'params'" in params.body["detail"]
    old = await owner.post("/v1/jobs", json={"version": versions.typed, "input": "upload_x"})
    assert old.status == 422 and "'inputs'" in old.body["detail"]
    legacy = await owner.post("/v1/jobs", json={"version": versions.legacy, "inputs": {}})
    assert legacy.status == 422 and "takes (input_path, output_dir)" in legacy.body["detail"]


async def test_a_typed_job_gets_a_file_path_and_a_float_with_defaults_applied(
    full_stack: Stack, versions: _Versions, owner: Client
) -> None:
    reply = await owner.post(
        "/v1/jobs",
        data=_form(
            {"version": versions.typed, "scale": "1", "tags": '["x", "y"]'},
            [
                ("image", "scan.png", b"hello"),
                ("more", "m1.bin", b"12"),
                ("more", "m2.bin", b"345"),
            ],
        ),
    )
    assert reply.status == 202, reply.body
    resolved = reply.body["inputs"]
    assert resolved == {
        "image": "image-scan.png",
        "scale": 1.0,
        "mode": "fast",
        "tags": ["x", "y"],
        "note": None,
        "more": ["more-0-m1.bin", "more-1-m2.bin"],
        "wrong": False,
    }
    job = await _ended(owner, reply.body["id"])
    assert job["status"] == "succeeded", job
    assert job["inputs"] == resolved  # the job view shows them too
    assert job["result"] == {
        "image_is_file": True,
        "image_name": "image-scan.png",
        "size": 5,
        "scale": 1.0,
        "scale_type": "float",
        "mode": "fast",
        "tags": ["x", "y"],
        "note": None,
        "more": [2, 3],
        "reversed": "reversed.bin",
    }
    [output] = job["outputs"]
    async with aiohttp.ClientSession() as http, http.get(output["url"]) as resp:
        assert await resp.read() == b"olleh"
    event = await _requested(full_stack, job["id"])
    assert event.inputs == resolved and event.params == {} and event.input_key == ""
    assert [(f.name, f.filename, f.size_bytes) for f in event.input_files] == [
        ("image-scan.png", "scan.png", 5),
        ("more-0-m1.bin", "m1.bin", 2),
        ("more-1-m2.bin", "m2.bin", 3),
    ]


@pytest.fixture
async def served() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("sig", "s3cr3t") != "s3cr3t":  # a signed link's signature
            raise web.HTTPForbidden()
        return web.Response(body=b"from a url")

    async with http_files(handle) as base:
        yield base


async def test_files_by_upload_id_and_by_url_in_a_json_body(
    full_stack: Stack, versions: _Versions, owner: Client, served: str
) -> None:
    upload = (
        await owner.post("/v1/uploads", json={"filename": "up.txt", "content_type": "text/plain"})
    ).body
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            upload["method"], upload["url"], data=b"uploaded!", headers=upload["headers"]
        ) as resp,
    ):
        assert resp.status < 300
    reply = await owner.post(
        "/v1/jobs",
        json={
            "version": versions.typed,
            "inputs": {"image": upload["id"], "more": [f"{served}/a.txt?sig=s3cr3t"], "note": "hi"},
        },
    )
    assert reply.status == 202, reply.body
    # A URL may be a presigned link: the log holds it redacted, the store whole.
    logged = await _requested(full_stack, reply.body["id"])
    (logged_url,) = [f for f in logged.input_files if f.url]
    assert logged_url.url == f"{served}/a.txt?sig=***" and logged_url.key
    assert reply.body["inputs"]["image"] == "image-up.txt"
    job = await _ended(owner, reply.body["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["size"] == 9 and job["result"]["more"] == [10]
    assert job["result"]["note"] == "hi"
    # In a form too: the upload id as the input's field, next to a file part.
    second = (await owner.post("/v1/uploads", json={"filename": "two.txt"})).body
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            second["method"], second["url"], data=b"22", headers=second["headers"]
        ) as resp,
    ):
        assert resp.status < 300
    form = _form({"version": versions.typed, "image": second["id"]}, [("more", "m.bin", b"333")])
    mixed = await owner.post("/v1/jobs", data=form)
    assert mixed.status == 202, mixed.body
    assert mixed.body["inputs"]["image"] == "image-two.txt"
    done = await _ended(owner, mixed.body["id"])
    assert done["status"] == "succeeded" and done["result"]["more"] == [3], done
    assert done["result"]["size"] == 2
    again = await owner.post(
        "/v1/jobs", json={"version": versions.typed, "inputs": {"image": second["id"]}}
    )
    assert again.status == 409 and again.body["title"] == "Upload already used", again.body


async def test_a_result_that_does_not_match_its_declaration_is_a_model_error(
    versions: _Versions, owner: Client
) -> None:
    reply = await owner.post(
        "/v1/jobs",
        data=_form({"version": versions.typed, "wrong": "true"}, [("image", "a.bin", b"x")]),
    )
    assert reply.status == 202, reply.body
    job = await _ended(owner, reply.body["id"])
    assert job["status"] == "failed" and job["error_kind"] == "model_error", job
    assert "declared Result" in job["error_message"] and job["outputs"] == []


async def test_the_legacy_form_still_works_with_params(versions: _Versions, owner: Client) -> None:
    reply = await owner.post(
        "/v1/jobs",
        data=_form(
            {"version": versions.legacy, "params": '{"k": 1}'}, [("input", "in.txt", b"abc")]
        ),
    )
    assert reply.status == 202, reply.body
    job = await _ended(owner, reply.body["id"])
    assert job["status"] == "succeeded" and job["result"]["bytes"] == 3, job
    extra = await owner.post(
        "/v1/jobs",
        data=_form({"version": versions.legacy, "scale": "1"}, [("input", "in.txt", b"a")]),
    )
    assert extra.status == 422 and extra.body["title"] == "Unknown form field", extra.body


async def test_an_upload_whose_signature_cannot_be_read_is_refused_naming_the_parameter(
    owner: Client,
) -> None:
    model = (await owner.post("/v1/models", json={"name": f"bad-{uuid.uuid4().hex[:8]}"})).body
    source = b"from runner import File\n\ndef run(image: File, level: dict = {}):\n    pass\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("predict.py", source)
    reply = await owner.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", buf.getvalue()
    )
    assert reply.status == 422, reply.body
    assert (
        "parameter 'level'" in reply.body["detail"]
        and "Supported annotations" in reply.body["detail"]
    )
    # Read after the model's own write: else the read models may not have it yet (404).
    after = {"after_seq": str(model["seq"])}
    versions = await owner.get(f"/v1/models/{model['id']}/versions", params=after)
    assert versions.body["items"] == []


async def test_a_typed_input_named_input_next_to_other_files_reaches_the_run(
    full_stack: Stack, owner: Client
) -> None:
    # The form's `input` part streams to the legacy single input's key, the others to
    # the job's folder: the store cannot keep both, so `input` is copied into the folder.
    version_id = await ready_version(owner, "typed_input")
    reply = await owner.post(
        "/v1/jobs",
        data=_form(
            {"version": version_id},
            [("input", "a.txt", b"abcd"), ("more", "b.txt", b"xy"), ("more", "c.txt", b"z")],
        ),
    )
    assert reply.status == 202, reply.body
    job = await _ended(owner, reply.body["id"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"input": 4, "more": [2, 1]}
    event = await _requested(full_stack, job["id"])
    assert all(f.key.startswith(f"inputs/{job['id']}/") for f in event.input_files), event


async def test_two_typed_jobs_under_one_key_at_once_make_one_on_its_own_files(
    versions: _Versions, owner: Client
) -> None:
    """Sent at the same moment with different files: one is made, the other refused
    (422) or told the first is in progress (409), and the job runs on its own file."""
    for round_no in range(5):
        key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
        images = [f"image {side} of round {round_no}\n".encode() * 50 for side in "ab"]
        replies = await asyncio.gather(
            *(
                owner.post(
                    "/v1/jobs",
                    data=_form({"version": versions.typed}, [("image", "scan.png", image)]),
                    headers=key,
                )
                for image in images
            )
        )
        made = [(image, r) for image, r in zip(images, replies, strict=True) if r.status == 202]
        assert len(made) == 1, [(r.status, r.body) for r in replies]
        assert all(r.status in (202, 409, 422) for r in replies), [r.body for r in replies]
        image, reply = made[0]
        job = await _ended(owner, reply.body["id"])
        assert job["status"] == "succeeded", job
        [output] = job["outputs"]
        async with aiohttp.ClientSession() as http, http.get(output["url"]) as resp:
            assert await resp.read() == image[::-1]


async def test_a_typed_job_another_request_is_making_is_told_it_is_in_progress(
    full_stack: Stack, versions: _Versions, owner: Client
) -> None:
    """The job's id held (a Postgres advisory lock, as another API process holds it
    while it moves that request's parts in): a request making the same job id, under the
    same Idempotency-Key or naming the same upload, is 409 at once; once the lock goes,
    the same request makes the job."""
    key = f"k-{uuid.uuid4().hex}"
    me = (await owner.get("/v1/me")).body["user_id"]
    keyed_job = CommandContext(actor=me, correlation_id="t", idempotency_key=key).resource_id("job")
    upload = (await owner.post("/v1/uploads", json={"filename": "up.png"})).body
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            upload["method"], upload["url"], data=b"up", headers=upload["headers"]
        ) as resp,
    ):
        assert resp.status < 300, resp.status

    def send() -> Any:
        files = [("image", "scan.png", b"held\n" * 50)]
        form = _form({"version": versions.typed}, files)
        return owner.post("/v1/jobs", data=form, headers={"Idempotency-Key": key})

    def on_upload() -> Any:
        return owner.post(
            "/v1/jobs", json={"version": versions.typed, "inputs": {"image": upload["id"]}}
        )

    assert full_stack.settings.database_url is not None
    pool = await create_pool(full_stack.settings.database_url)
    try:
        async with (
            job_held(pool, keyed_job) as held,
            job_held(pool, upload_job_id(upload["id"])) as held_too,
        ):
            assert held and held_too
            for reply in (await send(), await on_upload()):
                assert reply.status == 409, reply.body
                assert "being processed" in reply.body["detail"]
        made, made_too = await send(), await on_upload()
    finally:
        await pool.close()
    assert made.status == 202 and made.body["id"] == keyed_job, made.body
    assert made_too.status == 202 and made_too.body["id"] == upload_job_id(upload["id"])
    for job in (made, made_too):
        assert (await _ended(owner, job.body["id"]))["status"] == "succeeded"
