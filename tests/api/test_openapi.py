"""The API's OpenAPI document: one operation for every route and a route for every
operation (so the document cannot drift from the routes), the replies' types in step
with the read models they show, valid OpenAPI 3.1, served
without a key at /openapi.json; the /docs page and every file it loads served by the API
itself (no CDN)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import msgspec
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from projections import queries, webhook_queries
from services.api import replies, routes_jobs
from services.api.app import OPERATIONS, create_app
from services.api.openapi import openapi_path
from services.packages import zip_folder
from tests.api._client import Client, new_user
from tests.api.conftest import Stack

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
_HEALTH = {"/healthz", "/readyz", "/openapi.json", "/docs"}


def test_every_route_has_an_operation_and_every_operation_a_route(stack: Stack) -> None:
    app = create_app(stack.settings)
    routed = {
        (method, openapi_path(route.path))
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(op.method, openapi_path(op.path)) for op in OPERATIONS}
    assert routed - documented == set(), "routes without an operation"
    assert documented - routed == set(), "operations without a route"
    names = [op.name for op in OPERATIONS]
    assert len(names) == len(set(names)), "operationIds are unique"


@pytest.mark.parametrize(
    ("reply", "row", "left_out"),
    [
        (replies.Model, queries.ModelView, {"last_seq"}),
        (
            replies.Version,
            queries.VersionView,
            {"package_key", "artifact", "artifact_details", "log_key", "last_seq"},
        ),
        (replies.Job, queries.JobView, {"input_key", "log_key", "last_seq", "outputs_blob"}),
        (replies.ApiKey, queries.ApiKeyView, set()),
        (replies.Webhook, webhook_queries.WebhookView, {"created_seq", "last_seq"}),
        (replies.Delivery, webhook_queries.DeliveryView, {"last_seq"}),
        (replies.DeliveryAttempt, webhook_queries.AttemptView, {"delivery_id", "seq"}),
    ],
)
def test_each_reply_shows_its_read_model_s_fields_but_the_internal_ones(
    reply: type[msgspec.Struct], row: type[msgspec.Struct], left_out: set[str]
) -> None:
    """A column added to a read model is shown (and so documented) or named internal."""
    shown = set(reply.__struct_fields__) - {"seq"}
    assert shown == set(row.__struct_fields__) - left_out


async def test_the_document_is_valid_openapi_3_1_and_served_without_a_key(stack: Stack) -> None:
    reply = await Client(stack.url, None).get("/openapi.json")
    assert reply.status == 200
    document = reply.body
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on an invalid document
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            public = op.get("security") == []
            assert public == (path in _HEALTH or path.startswith("/v1/blobs/")), (method, path)
            if not public:
                assert "401" in op["responses"], (method, path)
            problem = op["responses"]["500"]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}


async def test_the_document_names_the_types_the_handlers_decode(stack: Stack) -> None:
    document = (await Client(stack.url, None).get("/openapi.json")).body
    create_model = document["paths"]["/v1/models"]["post"]
    body = create_model["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreateModelBody"}
    schema = document["components"]["schemas"]["CreateModelBody"]
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert schema["properties"]["visibility"]["enum"] == ["private", "public"]
    upload = document["paths"]["/v1/models/{model_id}/versions"]["post"]["requestBody"]
    form = upload["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["package"]
    assert form["properties"]["package"]["format"] == "binary"
    jobs = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(jobs) == {"application/json", "multipart/form-data"}
    assert jobs["multipart/form-data"]["schema"]["properties"]["input"]["format"] == "binary"
    form_fields = set(jobs["multipart/form-data"]["schema"]["properties"])
    assert form_fields == routes_jobs._JOB_FIELDS  # the fields create_job reads
    created = document["paths"]["/v1/jobs"]["post"]["responses"]
    assert set(created) >= {"200", "202", "401", "404", "409", "422", "429"}


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.links.append(value)


async def test_the_docs_page_loads_and_its_assets_are_served_by_the_api(stack: Stack) -> None:
    anonymous = Client(stack.url, None)
    page = await anonymous.get("/docs")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    parser = _Assets()
    parser.feed(html)
    assert len(parser.links) >= 2, html
    for link in parser.links:
        assert link.startswith("/docs/assets/"), f"{link}: served from elsewhere"
        asset = await anonymous.get(link)
        assert asset.status == 200, link
        assert len(asset.body) > 1000, link
    assert re.search(r'url: "/openapi.json"', html)
    assert "validatorUrl: null" in html  # Swagger UI would call an online validator


def test_the_docs_page_renders_every_path_in_a_browser_with_no_other_host(stack: Stack) -> None:
    """Swagger UI runs (it reads OpenAPI 3.1) with every other host unreachable: the
    page needs nothing from outside."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs chromium")
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        "--dump-dom",
        f"{stack.url}/docs",
    ]
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'class="swagger-ui' in dom, dom[:2000]
    for path in ("/v1/models/{model_id}/versions", "/v1/jobs/{job_id}/result", "/healthz"):
        assert f'data-path="{path}"' in dom, path


async def test_a_version_not_built_has_no_document_yet(stack: Stack) -> None:
    """This stack runs no builder: an uploaded version stays `uploaded`."""
    owner = await new_user(stack.url, stack.admin_key, "unbuilt")
    model = (await owner.post("/v1/models", json={"name": "unbuilt"})).body
    uploaded = await owner.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(PACKAGES / "noop")
    )
    assert uploaded.status == 201, uploaded.body
    reply = await owner.get(
        f"/v1/versions/{uploaded.body['id']}/openapi.json",
        params={"after_seq": str(uploaded.body["seq"])},
    )
    assert reply.status == 409, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    assert "is uploaded" in reply.body["detail"]
