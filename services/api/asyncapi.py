"""`GET /asyncapi.json`: the event stream described for its subscribers (AsyncAPI 3.0,
see `events.asyncapi`), built once per app and served to any authenticated caller."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events.asyncapi import asyncapi_document
from services.api.openapi_spec import Operation, Reply
from services.api.wiring import services

__all__ = ["asyncapi_route", "clinai_version", "operations"]


def clinai_version() -> str:
    try:
        return version("clinai")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


def asyncapi_route(stream: str) -> Route:
    """The route serving the document of the stream named `stream`."""
    body = orjson.dumps(asyncapi_document(stream=stream, version=clinai_version()))

    async def asyncapi(request: Request) -> Response:
        await services(request).caller(request)
        return Response(body, media_type="application/json")

    return Route("/asyncapi.json", asyncapi, methods=["GET"])


operations = [
    Operation(
        method="GET",
        path="/asyncapi.json",
        name="asyncapi",
        summary="The event stream described for its subscribers (AsyncAPI 3.0)",
        tag="events",
        replies={200: Reply(description="The AsyncAPI document", type=dict[str, Any])},
    ),
]
