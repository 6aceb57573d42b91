"""`GET /metrics`: this API process's Prometheus metrics, on the API's own port.

Authenticated like every endpoint but health: `Authorization: Bearer <token>` with the
operator's scrape token (`CLINAI_METRICS_TOKEN`, which reads metrics and nothing else),
or an admin API key. Each API process answers with its own metrics: scrape every process
(its own address or pod), not a load balancer in front of them. A metrics port without
authentication (`CLINAI_METRICS_PORT`) serves the same text, for a private network."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.api.auth import authenticate
from services.api.openapi_spec import Operation, Reply
from services.api.problems import ApiError
from services.api.wiring import services
from services.metrics import ServiceMetrics
from services.metrics.registry import CONTENT_TYPE

__all__ = ["metrics_route", "operations"]


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def metrics_route(metrics: ServiceMetrics) -> Route:
    async def scrape(request: Request) -> Response:
        svc = services(request)
        expected = svc.settings.metrics_token
        token = _bearer(request)
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            principal = await authenticate(request, svc.keys)
            if not principal.is_admin:
                raise ApiError(
                    403,
                    "Forbidden",
                    "metrics are for operators: scrape with the CLINAI_METRICS_TOKEN or an "
                    "admin API key as the bearer token",
                )
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE)

    return Route("/metrics", scrape, methods=["GET"])


operations = [
    Operation(
        method="GET",
        path="/metrics",
        name="metrics",
        summary="This API process's Prometheus metrics (the scrape token or an admin key)",
        tag="operations",
        problems=(403,),
        replies={
            200: Reply(
                description="Prometheus text exposition",
                media_type="text/plain",
                schema={"type": "string"},
            )
        },
    ),
]
