"""Text Postgres cannot store (a NUL, a lone surrogate) is refused at the API with a 422
that names the field, on every way text comes in: JSON bodies, form fields, params and
query parameters. Before, it was accepted (and stopped the projector) or was a 500."""

from __future__ import annotations

import pytest

from tests.api._client import Client, new_user
from tests.api.conftest import Stack

_NUL = "\\u0000"


def _refused(reply: object, where: str) -> None:
    status, body = reply.status, reply.body  # type: ignore[attr-defined]
    assert status == 422, (status, body)
    assert body["title"] == "Invalid text"
    assert where in body["detail"], body["detail"]
    assert "cannot be stored; change that value" in body["detail"]


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/models", f'{{"name": "m", "description": "a{_NUL}b"}}', "$.description contains"),
        ("/v1/users", f'{{"name": "{_NUL}"}}', "$.name contains a NUL character"),
        ("/v1/api-keys", f'{{"name": "k{_NUL}"}}', "$.name contains a NUL character"),
        (
            "/v1/webhooks",
            f'{{"url": "https://example.com/{_NUL}", "events": ["job.*"]}}',
            "$.url contains a NUL character",
        ),
    ],
)
async def test_json_bodies_with_a_nul_are_refused(
    stack: Stack, path: str, body: str, where: str
) -> None:
    admin = Client(stack.url, stack.admin_key)
    reply = await admin.post(path, data=body, headers={"content-type": "application/json"})
    _refused(reply, where)


async def test_a_json_body_with_an_integer_beyond_64_bits_is_refused(stack: Stack) -> None:
    """Before: the job was appended, its event quarantined by the projector (the job
    never showed) and the answer was a 500."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    body = '{"version": "ver_x", "inputs": {"n": 1180591620717411303424}}'
    reply = await alice.post("/v1/jobs", data=body, headers={"content-type": "application/json"})
    _refused(reply, "$.inputs.n is an integer outside the 64-bit range (send it as a string)")


async def test_job_form_fields_and_query_parameters_with_a_nul_are_refused(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    reply = await alice.upload(
        "/v1/jobs", "input", "in.png", b"x", version="ver_x", params='{"p": ["a\\u0000"]}'
    )
    _refused(reply, "'params': $.p[0] contains a NUL character")
    reply = await alice.upload("/v1/jobs", "input", "in.png", b"x", version="ver_\x00x")
    _refused(reply, "'version': it contains a NUL character")
    # Query parameters with a fixed shape (an id, a status) are refused by their own rule,
    # which no NUL passes either.
    reply = await alice.get("/v1/jobs", params={"model_id": "mdl_\x00"})
    assert (reply.status, reply.body["title"]) == (422, "Invalid model id"), reply.body
    reply = await alice.get("/v1/jobs", params={"status": "\x00"})
    assert (reply.status, reply.body["title"]) == (422, "Invalid status"), reply.body
