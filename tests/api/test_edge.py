"""Bad requests at the API's edge: each is a 4xx whose detail says what to do, never a
500, and nothing malformed reaches the log or the read models."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from starlette.routing import Route

from services.api.app import create_app
from tests.api._client import Client, new_user
from tests.api._raw import RawReply, raw_request
from tests.api.conftest import Stack
from tests.api.test_api import _ready_version

BAD_IDS = [
    b"%2A",
    b"%3E",
    b"%2E",
    b"a.b",
    b"a%2Eb",
    b"%20",
    b"a%20b",
    b"%0D%0A",
    b"%00",
    b"x" * 101,
]


def id_routes(stack: Stack) -> list[tuple[str, str]]:
    """(method, path) of every route of the app that takes an id in its path."""
    app = create_app(stack.settings)
    found = []
    for route in app.routes:
        if isinstance(route, Route) and "_id}" in route.path:
            found += [
                (method, route.path) for method in sorted(route.methods or ()) if method != "HEAD"
            ]
    return found


async def test_every_route_refuses_a_malformed_id_with_what_an_id_looks_like(
    stack: Stack,
) -> None:
    routes = id_routes(stack)
    assert len(routes) >= 20  # models, versions, jobs, keys, webhooks, deliveries, events
    auth = [(b"Authorization", b"Bearer " + stack.admin_key.encode())]
    for method, path in routes:
        for bad in BAD_IDS:
            target = re.sub(r"\{[a-z_]+_id\}", bad.decode(), path).encode()
            reply = await raw_request(stack.url, method, target, headers=auth)
            assert reply.status == 404, (method, target, reply.status, reply.body)
            problem = reply.json()
            assert isinstance(problem, dict)
            assert "ids are 1 to 100 letters, digits or '_'" in problem["detail"], problem


async def test_ids_in_queries_forms_and_bodies_are_checked_too(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    listed = await alice.get("/v1/jobs", params={"model_id": "a.b"})
    assert listed.status == 422
    assert "ids are" in listed.body["detail"]
    by_version = await alice.upload("/v1/jobs", "input", "in.png", b"x", version="ver_*")
    assert by_version.status == 422
    assert "not a version id" in by_version.body["detail"]
    by_model = await alice.upload("/v1/jobs", "input", "in.png", b"x", model="mdl\x00")
    assert by_model.status == 422
    for_user = await Client(stack.url, stack.admin_key).post(
        "/v1/api-keys", json={"user_id": "usr_a.>"}
    )
    assert for_user.status == 422
    assert "not a user id" in for_user.body["detail"]
    events = await alice.get("/v1/events", params={"id": "job_*"})
    assert events.status == 422
    aggregate = await alice.get("/v1/events", params={"aggregate": "jobs"})
    assert aggregate.status == 422
    assert "one of user" in aggregate.body["detail"]


@pytest.mark.parametrize("wait", ["nan", "inf", "-inf", "-1", "1e999", "NaN"])
async def test_a_long_poll_with_a_wait_that_is_no_duration_is_422(stack: Stack, wait: str) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    ids = await _ready_version(stack, alice)
    job = await alice.upload("/v1/jobs", "input", "in.png", b"x", version=ids["version"])
    assert job.status == 202, job.body
    reply = await alice.get(f"/v1/jobs/{job.body['id']}", params={"wait": wait})
    assert reply.status == 422, reply.body
    assert "wait is a number of seconds" in reply.body["detail"]
    created = await alice.upload(
        "/v1/jobs?wait=" + wait, "input", "in.png", b"x", version=ids["version"]
    )
    assert created.status == 422, created.body


async def test_a_huge_wait_is_capped_not_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.get("/v1/jobs/job_nothere", params={"wait": "1e300"})
    assert reply.status == 404


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/v1/versions/ver_nothere/log", "from", str(2**40)),
        ("/v1/events", "from_seq", str(2**70)),
        ("/v1/models", "after_seq", str(2**70)),
        ("/v1/models", "after_seq", "-5"),
        ("/v1/jobs", "status", "queued\x00"),
    ],
)
async def test_numbers_and_words_out_of_range_are_422(
    stack: Stack, path: str, param: str, value: str
) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.get(path, params={param: value})
    assert reply.status in (404, 422), (reply.status, reply.body)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/models", b"name"),
        ("/v1/models", b"description"),
        ("/v1/users", b"name"),
        ("/v1/api-keys", b"name"),
        ("/v1/webhooks", b"url"),
    ],
)
async def test_a_json_body_that_is_not_utf8_is_400(stack: Stack, path: str, field: bytes) -> None:
    admin = Client(stack.url, stack.admin_key)
    reply = await admin.request(
        "POST",
        path,
        data=b'{"%s": "ok \xff\xfe"}' % field,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 400, reply.body
    assert "not valid UTF-8" in reply.body["detail"]


async def _multipart(
    client: Client, path: str, parts: list[tuple[str, str | bytes]]
) -> dict[str, Any]:
    form = aiohttp.FormData()
    for name, value in parts:
        if isinstance(value, bytes):
            form.add_field(name, value, filename="in.png")
        else:
            form.add_field(name, value)
    reply = await client.request("POST", path, data=form)
    assert reply.status == 422, (reply.status, reply.body)
    body: dict[str, Any] = reply.body
    return body


async def test_a_form_with_unknown_repeated_or_conflicting_fields_is_422(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    ids = await _ready_version(stack, alice)
    version, model = ("version", ids["version"]), ("model", ids["model"])
    cases: list[tuple[str, list[tuple[str, str | bytes]], list[str]]] = [
        ("/v1/jobs", [version, ("timeout", "5"), ("input", b"x")], ["not 'timeout'", "timeout_s"]),
        ("/v1/jobs", [version, model, ("input", b"x")], ["not both"]),
        (
            "/v1/jobs",
            [version, ("input", b"x"), ("input", b"y")],
            ["'input' was sent more than once"],
        ),
        ("/v1/jobs", [version, version, ("input", b"x")], ["'version' was sent more than once"]),
        (
            f"/v1/models/{ids['model']}/versions",
            [("package", b"PK"), ("notes", "x")],
            ["not 'notes'"],
        ),
    ]
    for path, fields, needles in cases:
        body = await _multipart(alice, path, fields)
        for needle in needles:
            assert needle in body["detail"], (fields, body)
    listed = await alice.get("/v1/jobs", params={"model_id": ids["model"]})
    assert listed.body["items"] == []  # nothing was queued


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", b"/v1/jobs", "GET, HEAD, POST"),
        ("PUT", b"/v1/jobs/job_1", "GET, HEAD"),
        ("OPTIONS", b"/v1/models/mdl_1", "DELETE, GET, HEAD, PATCH"),
        ("POST", b"/v1/me", "GET, HEAD"),
        ("PATCH", b"/v1/blobs/outputs/job_1/a.png", "GET, HEAD, PUT"),
        ("DELETE", b"/sign-in", "GET, HEAD, POST"),  # a dashboard page
    ],
)
async def test_a_method_the_path_does_not_take_is_405_naming_all_it_takes(
    stack: Stack, method: str, path: bytes, allowed: str
) -> None:
    """Not a 404 'no such endpoint' (the dashboard's mount at "" took every path), and
    Allow lists the methods of every route of the path, not of the first one only."""
    auth = [(b"Authorization", b"Bearer " + stack.admin_key.encode())]
    for headers in (auth, []):
        reply = await raw_request(stack.url, method, path, headers=headers)
        assert reply.status == 405, (reply.status, reply.body)
        assert reply.headers["allow"] == allowed
        assert reply.headers["content-type"] == "application/problem+json"
        problem = reply.json()
        assert isinstance(problem, dict)
        assert problem["detail"].endswith(f"use {allowed.replace(', ', ' or ')}"), problem


async def test_an_unknown_path_is_still_404(stack: Stack) -> None:
    reply = await raw_request(stack.url, "DELETE", b"/v1/no-such-thing")
    assert reply.status == 404
    assert reply.json() == {
        "type": "about:blank",
        "title": "Not found",
        "status": 404,
        "detail": "no such endpoint; see the README for the API",
    }


async def test_a_status_no_job_has_is_422_naming_those_there_are(stack: Stack) -> None:
    """A typo (`succeded`) is no empty page that looks like 'no such jobs'."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.get("/v1/jobs", params={"status": "succeded"})
    assert reply.status == 422, reply
    assert reply.body["detail"] == (
        "status is a job status: one of aborted, canceled, failed, queued, running, succeeded"
    )
    assert (await alice.get("/v1/jobs", params={"status": "aborted"})).status == 200


async def _post_job(stack: Stack, body: bytes, content_type: bytes | None) -> RawReply:
    """POST /v1/jobs as a new user, the body and Content-Type exactly as given."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    headers = [(b"Authorization", f"Bearer {alice.key}".encode())]
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    return await raw_request(stack.url, "POST", b"/v1/jobs", headers=headers, body=body)


@pytest.mark.parametrize(("depth", "status"), [(60, 404), (300, 422), (100_000, 422)])
async def test_json_nested_too_deeply_is_422(stack: Stack, depth: int, status: int) -> None:
    """A job's `params` take any JSON: nested some hundreds deep, decoding it (a
    RecursionError) or the reply (orjson stops at 254 levels) was a 500. Within the
    limit, the body is decoded (and the version, which does not exist, looked up)."""
    params = b'{"a": ' * depth + b"1" + b"}" * depth
    body = b'{"version": "ver_1", "params": ' + params + b"}"
    reply = await _post_job(stack, body, b"application/json")
    assert reply.status == status, (reply.status, reply.body[:300])
    problem = reply.json()
    assert isinstance(problem, dict)
    if status == 422:
        assert problem["detail"] == (
            "the body nests JSON more than 64 levels deep; send flatter JSON"
        )


async def test_form_params_nested_too_deeply_are_422(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    params = '{"a": ' * 300 + "1" + "}" * 300
    form = aiohttp.FormData({"version": "ver_1", "params": params})
    form.add_field("input", b"x", filename="x.bin")
    reply = await alice.post("/v1/jobs", data=form)
    assert reply.status == 422, reply
    assert reply.body["detail"] == (
        "'params' nests JSON more than 64 levels deep; send flatter JSON"
    )


@pytest.mark.parametrize(
    "content_type", [None, b"text/plain", b"application/x-www-form-urlencoded"]
)
async def test_a_job_neither_multipart_nor_json_is_415_naming_both(
    stack: Stack, content_type: bytes | None
) -> None:
    """A JSON job sent without its Content-Type was told to send a multipart file only."""
    body = b'{"version": "ver_1", "input": "upload_1"}'
    reply = await _post_job(stack, body, content_type)
    assert reply.status == 415, (reply.status, reply.body)
    problem = reply.json()
    assert isinstance(problem, dict)
    assert "multipart/form-data" in problem["detail"]
    assert "Content-Type: application/json" in problem["detail"]
