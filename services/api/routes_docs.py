"""The API described: `GET /openapi.json` (the document, see `services.api.openapi`),
`GET /docs` (Swagger UI on it, its files served from the `swagger-ui-py` package under
`/docs/assets`: no CDN, the API runs air-gapped) and `GET /v1/versions/{id}/openapi.json`
(one ready version's document: its typed inputs as the body of `POST /v1/jobs`, for a
client generator).

`/openapi.json` and `/docs` are public, like health: they describe the API and hold no
one's data. A version's document is not: it shows a private model's inputs, so it is
answered to those who may see the version (as `/schema`)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from services.api._version_schemas import LEGACY_SCHEMA
from services.api.openapi_spec import Operation, Reply, path_param
from services.api.problems import ApiError
from services.api.wiring import json_response, path_id, services, visible_version
from services.packages.schema import FILE_HELP

__all__ = ["ASSETS_PATH", "docs_routes", "operations", "swagger_ui_dir", "version_document"]

ASSETS_PATH: Final = "/docs/assets"
_NAMING: Final = frozenset({"version", "model", "input", "input_url", "inputs", "params"})
_JOB_PATHS: Final = ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/uploads")
_DOCS_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ClinAI API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  layout: "BaseLayout"
}});
</script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's files in the `swagger-ui-py` package (found without
    importing it: only its files are used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed: /docs needs it")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_routes(document: dict[str, Any]) -> list[BaseRoute]:
    body = orjson.dumps(document)
    page = _DOCS_PAGE.format(assets=ASSETS_PATH)

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    async def version_openapi(request: Request) -> Response:
        svc = services(request)
        caller = await svc.caller(request)
        version = await visible_version(svc, path_id(request, "version_id"), caller)
        if version.status != "ready":
            raise ApiError(
                409,
                "Version not ready",
                f"version {version.id} is {version.status}: its document is served once it "
                f"is ready (GET /v1/versions/{version.id} says when)",
            )
        compiled = await svc.version_schemas.get(version.id)
        inputs = LEGACY_SCHEMA if compiled is None else compiled.json_schema()
        return json_response(version_document(document, version.id, version.number, inputs))

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount(ASSETS_PATH, app=StaticFiles(directory=swagger_ui_dir()), name="docs-assets"),
        Route("/v1/versions/{version_id}/openapi.json", version_openapi, methods=["GET"]),
    ]


def version_document(
    document: dict[str, Any], version_id: str, number: int, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The platform's document cut to running one version: its paths for jobs, with
    the version's inputs as the body of `POST /v1/jobs` (multipart: a part or field per
    input; JSON: `inputs`, files as upload ids or URLs)."""
    out = copy.deepcopy({k: v for k, v in document.items() if k != "paths"})
    out["info"]["title"] = f"ClinAI version {version_id} (#{number})"
    out["paths"] = {p: copy.deepcopy(document["paths"][p]) for p in _JOB_PATHS}
    legacy = inputs.get("x-clinai-form") == "legacy"
    given = {k: v for k, v in inputs.items() if k not in ("$schema", "x-clinai-output")}
    parts = _with_files(given, binary=True)
    out["components"]["schemas"]["InputsJson"] = _with_files(given, binary=False)
    pinned = {"version": {"const": version_id, "description": "this version"}}
    # The platform's fields of a job (timeout_s, webhook...), but those naming what to
    # run and how its input is given.
    create = out["paths"]["/v1/jobs"]["post"]
    given_as = create["requestBody"]["content"]
    form_fields = given_as["multipart/form-data"]["schema"]["properties"]
    body_ref = given_as["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    body_fields = out["components"]["schemas"][body_ref]["properties"]
    extra = {k: v for k, v in form_fields.items() if k not in _NAMING}
    json_extra = {k: v for k, v in body_fields.items() if k not in _NAMING}
    form: dict[str, Any] = {
        "type": "object",
        "properties": {**pinned, **extra, **parts.get("properties", {})},
        "required": ["version", *parts.get("required", [])],
        "additionalProperties": False,
    }
    if legacy:
        json_inputs: dict[str, Any] = {k: body_fields[k] for k in ("input", "input_url", "params")}
    else:
        json_inputs = {"inputs": {"$ref": "#/components/schemas/InputsJson"}}
    as_json = {
        "type": "object",
        "properties": {**pinned, **json_extra, **json_inputs},
        "required": ["version"] if legacy else ["version", "inputs"],
        "additionalProperties": False,
    }
    create["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": form},
            "application/json": {"schema": as_json},
        },
    }
    result = inputs.get("x-clinai-output")
    if result is not None:
        answer = out["paths"]["/v1/jobs/{job_id}/result"]["get"]["responses"]["200"]
        answer["content"]["application/json"]["schema"] = result
    return out


def _with_files(schema: dict[str, Any], *, binary: bool) -> dict[str, Any]:
    """`schema` with each file input (`x-clinai-file`) as a part (`binary`) or as an
    upload id or URL."""
    out = copy.deepcopy(schema)
    for prop in out.get("properties", {}).values():
        if prop.get("x-clinai-file"):
            _file_strings(prop, binary)
    return out


def _file_strings(node: Any, binary: bool) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string":
            if binary:
                node.update(format="binary", contentMediaType="application/octet-stream")
            else:
                node.pop("format", None)
                node["description"] = FILE_HELP
        for value in node.values():
            _file_strings(value, binary)
    elif isinstance(node, list):
        for value in node:
            _file_strings(value, binary)


operations = [
    Operation(
        method="GET",
        path="/openapi.json",
        name="openapi",
        summary="This document (public)",
        tag="operations",
        public=True,
        replies={200: Reply(description="OpenAPI 3.1", type=dict[str, Any])},
    ),
    Operation(
        method="GET",
        path="/docs",
        name="docs",
        summary="Interactive documentation of this API (public)",
        tag="operations",
        public=True,
        replies={200: Reply(description="Swagger UI", media_type="text/html", schema={})},
    ),
    Operation(
        method="GET",
        path="/v1/versions/{version_id}/openapi.json",
        name="version_openapi",
        summary="A ready version's own OpenAPI document: its typed inputs as the body of "
        "POST /v1/jobs",
        tag="models",
        params=(path_param("version_id", "version"),),
        problems=(409,),
        replies={200: Reply(description="OpenAPI 3.1", type=dict[str, Any])},
    ),
]
